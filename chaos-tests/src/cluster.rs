//! [`Cluster`]: a production-shaped Cairn cluster of separate `cairn` processes on this
//! machine, formed through the admin API as the README's "Deploying" section says, and the
//! levers to hurt it: SIGKILL, SIGSTOP/SIGCONT, restarts on the same data dirs, a member cut
//! off by its [`PartitionRelay`], a node restarted with its clock skewed (libfaketime).
//!
//! Formation: the first member `--init`s the group and writes the admin token; every other
//! member gets a copy of `coordinator.key` (and of `admin.token`, so one token serves every
//! member's admin API), starts, and is added with `cairn admin members add`; each node is
//! invited with `cairn admin invite --org` and started with the token; each gateway starts
//! against every member and is registered with `cairn admin gateway add`.
//!
//! Members advertise their relay's address, so Raft traffic between them passes through
//! the relays; gateways are given the members' own QUIC addresses, so a partition of the
//! members leaves them reaching every member.

use std::collections::HashMap;
use std::fmt;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::partition::PartitionRelay;

/// Why the harness could not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HarnessError(pub String);

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

impl From<std::io::Error> for HarnessError {
    fn from(err: std::io::Error) -> Self {
        HarnessError(err.to_string())
    }
}

/// The harness's results.
pub type Result<T> = std::result::Result<T, HarnessError>;

fn fail<T>(what: impl Into<String>) -> Result<T> {
    Err(HarnessError(what.into()))
}

/// How long a process may take to print that it is ready.
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long one `cairn admin` call may take before it is killed and counted as failed
/// (a paused or cut-off member may never answer).
const ADMIN_LIMIT: Duration = Duration::from_secs(15);

/// Where libfaketime's preload library is, if installed (Debian's `faketime` package).
pub fn faketime_library() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
        "/usr/local/lib/faketime/libfaketime.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|path| path.exists())
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A free loopback port for UDP (QUIC) and TCP alike, below the ephemeral range: processes
/// here are killed and restarted on their ports, which a client socket could otherwise take
/// while they are down.
fn free_port() -> Result<u16> {
    Ok(crate::ports::reserve(1)?)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A child process, its readiness lines, and whether it is stopped.
struct Proc {
    child: Option<Child>,
    paused: bool,
}

impl Proc {
    /// Spawns `command` (stderr appended to `log`) and waits until it has printed a line
    /// starting with each of `wanted`; returns the rest of each such line.
    fn spawn(
        mut command: Command,
        log: &Path,
        wanted: &[&str],
    ) -> Result<(Proc, HashMap<String, String>)> {
        let stderr = OpenOptions::new().create(true).append(true).open(log)?;
        command.stdout(Stdio::piped()).stderr(Stdio::from(stderr));
        let mut child = command.spawn()?;
        let Some(stdout) = child.stdout.take() else {
            return fail("no stdout pipe");
        };
        let (tx, rx) = mpsc::channel();
        // Keeps draining stdout after readiness so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut proc = Proc {
            child: Some(child),
            paused: false,
        };
        let deadline = Instant::now() + START_LIMIT;
        let mut found = HashMap::new();
        while found.len() < wanted.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    for prefix in wanted {
                        if let Some(rest) = line.strip_prefix(prefix) {
                            found.insert(prefix.to_string(), rest.trim().to_string());
                        }
                    }
                }
                Err(_) => {
                    proc.kill9();
                    return fail(format!(
                        "process exited or stalled before printing {wanted:?} (log: {})",
                        log.display()
                    ));
                }
            }
        }
        Ok((proc, found))
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn running(&self) -> bool {
        self.child.is_some()
    }

    fn signal(&mut self, signal: &str) -> Result<()> {
        let Some(pid) = self.pid() else {
            return fail("process not running");
        };
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()?;
        if !status.success() {
            return fail(format!("kill {signal} {pid} failed"));
        }
        self.paused = signal == "-STOP";
        Ok(())
    }

    /// SIGKILL: no chance to flush or clean up.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One coordinator member.
pub struct MemberProc {
    /// Raft id.
    pub id: u64,
    /// Data dir.
    pub dir: PathBuf,
    /// Its own QUIC address (gateways dial this).
    pub quic: SocketAddr,
    /// Its admin API address.
    pub admin: SocketAddr,
    /// The relay other members reach it through (its advertised address).
    pub relay: PartitionRelay,
    proc: Proc,
    flags: Vec<String>,
}

impl MemberProc {
    fn start(&mut self, bin: &Path, init: bool) -> Result<String> {
        let mut command = Command::new(bin);
        command
            .arg("coordinator")
            .args(["--id", &self.id.to_string()])
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--listen", &self.quic.to_string()])
            .args(["--admin-listen", &self.admin.to_string()])
            .args(["--advertise", &self.relay.local_addr().to_string()])
            .args(&self.flags)
            .env_remove("CAIRN_ADMIN_TOKEN")
            .env("CAIRN_LOG", "warn");
        if init {
            command.arg("--init");
        }
        let (proc, lines) = Proc::spawn(
            command,
            &self.dir.with_extension("log"),
            &["member key: ", "admin API on "],
        )?;
        self.proc = proc;
        Ok(lines.get("member key: ").cloned().unwrap_or_default())
    }

    /// Whether its process runs (stopped or not).
    pub fn running(&self) -> bool {
        self.proc.running()
    }

    /// Whether it is stopped with SIGSTOP.
    pub fn paused(&self) -> bool {
        self.proc.paused
    }

    fn url(&self) -> String {
        format!("http://{}", self.admin)
    }
}

/// One storage node.
pub struct NodeProc {
    /// Its organisation.
    pub org: String,
    /// Its folder (config, data dir, log).
    pub dir: PathBuf,
    /// Its node id, as `cairn admin nodes` lists it.
    pub id: String,
    /// Its QUIC address (the same across restarts).
    pub listen: SocketAddr,
    /// Its metrics and status page address.
    pub metrics: SocketAddr,
    /// Seconds its clock is moved by, while it runs skewed.
    pub skew_secs: Option<i64>,
    config: PathBuf,
    proc: Proc,
}

impl NodeProc {
    fn start(&mut self, bin: &Path) -> Result<()> {
        let mut command = Command::new(bin);
        command
            .arg("node")
            .arg("--config")
            .arg(&self.config)
            .env("CAIRN_LOG", "warn");
        if let Some(offset) = self.skew_secs {
            let Some(library) = faketime_library() else {
                return fail("libfaketime is not installed (Debian: apt-get install faketime)");
            };
            // Only the wall clock moves: timers and timeouts run on the monotonic clock.
            command
                .env("LD_PRELOAD", library)
                .env("FAKETIME", format!("{offset:+}"))
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_DONT_RESET", "1");
        }
        let (proc, lines) = Proc::spawn(
            command,
            &self.dir.join("node.log"),
            &["node id: ", "listening on "],
        )?;
        self.proc = proc;
        if let Some(id) = lines.get("node id: ") {
            self.id = id.clone();
        }
        Ok(())
    }

    /// Whether its process runs.
    pub fn running(&self) -> bool {
        self.proc.running()
    }
}

/// One S3 gateway.
pub struct GatewayProc {
    /// Its data dir (holds its key).
    pub dir: PathBuf,
    /// Its S3 address (the same across restarts).
    pub listen: SocketAddr,
    /// `http://…` of its S3 API.
    pub endpoint: String,
    /// Its key, as registered.
    pub key: String,
    proc: Proc,
}

impl GatewayProc {
    fn start(&mut self, bin: &Path, members: &[SocketAddr], coordinator_key: &str) -> Result<()> {
        let mut command = Command::new(bin);
        command
            .arg("gateway")
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--listen", &self.listen.to_string()]);
        for member in members {
            command.args(["--coordinator", &member.to_string()]);
        }
        command
            .args(["--coordinator-key", coordinator_key])
            .env("CAIRN_LOG", "warn");
        let (proc, lines) = Proc::spawn(
            command,
            &self.dir.with_extension("log"),
            &["gateway key: ", "S3 on "],
        )?;
        self.proc = proc;
        self.key = lines.get("gateway key: ").cloned().unwrap_or_default();
        self.endpoint = lines.get("S3 on ").cloned().unwrap_or_default();
        Ok(())
    }

    /// Whether its process runs.
    pub fn running(&self) -> bool {
        self.proc.running()
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Coordinator members (ids 1…).
    pub members: u64,
    /// One node per entry: its organisation.
    pub node_orgs: Vec<String>,
    /// Gateways.
    pub gateways: usize,
    /// Extra `cairn coordinator` flags (timers), given to every member.
    pub coordinator_flags: Vec<String>,
    /// Extra TOML lines for every node's config.
    pub node_toml: String,
}

/// The running cluster; every process is killed when it is dropped.
pub struct Cluster {
    bin: PathBuf,
    root: PathBuf,
    token: String,
    /// The coordinator key's public half, as nodes pin it and gateways are given it.
    pub coordinator_key: String,
    /// Members, by position (id = position + 1).
    pub members: Vec<MemberProc>,
    /// Storage nodes.
    pub nodes: Vec<NodeProc>,
    /// Gateways.
    pub gateways: Vec<GatewayProc>,
}

impl Cluster {
    /// Starts and forms the cluster in `root` from the `cairn` binary at `bin`; relays run
    /// on `runtime`. Returns once every member votes, every node has heartbeated and every
    /// gateway is registered.
    pub fn form(
        bin: &Path,
        root: &Path,
        runtime: tokio::runtime::Handle,
        spec: &ClusterSpec,
    ) -> Result<Cluster> {
        if spec.members == 0 {
            return fail("a group needs a member");
        }
        let mut members = Vec::new();
        for id in 1..=spec.members {
            let quic = loopback(free_port()?);
            let admin = loopback(free_port()?);
            let relay = runtime.block_on(PartitionRelay::start(loopback(0), quic))?;
            members.push(MemberProc {
                id,
                dir: root.join(format!("m{id}")),
                quic,
                admin,
                relay,
                proc: Proc {
                    child: None,
                    paused: false,
                },
                flags: spec.coordinator_flags.clone(),
            });
        }
        let mut cluster = Cluster {
            bin: bin.to_path_buf(),
            root: root.to_path_buf(),
            token: String::new(),
            coordinator_key: String::new(),
            members,
            nodes: Vec::new(),
            gateways: Vec::new(),
        };

        // The first member forms the group and writes the coordinator key and admin token.
        let bin = cluster.bin.clone();
        cluster.members[0].start(&bin, true)?;
        let first = cluster.members[0].dir.clone();
        cluster.token = std::fs::read_to_string(first.join("admin.token"))?
            .trim()
            .to_string();
        for i in 1..cluster.members.len() {
            let dir = cluster.members[i].dir.clone();
            std::fs::create_dir_all(&dir)?;
            std::fs::copy(first.join("coordinator.key"), dir.join("coordinator.key"))?;
            std::fs::copy(first.join("admin.token"), dir.join("admin.token"))?;
            let key = cluster.members[i].start(&bin, false)?;
            let m = &cluster.members[i];
            let (id, addr, adm) = (
                m.id.to_string(),
                m.relay.local_addr().to_string(),
                m.admin.to_string(),
            );
            cluster.admin(&[
                "members", "add", "--id", &id, "--addr", &addr, "--admin", &adm, "--key", &key,
            ])?;
        }
        let voters = spec.members as usize;
        let status = cluster.wait_status("every member votes", START_LIMIT, |s| {
            s["members"]
                .as_array()
                .is_some_and(|m| m.len() == voters && m.iter().all(|m| m["voter"] == true))
        })?;
        let Some(key) = status["coordinator_key"].as_str() else {
            return fail("status without a coordinator key");
        };
        cluster.coordinator_key = key.to_string();

        for (i, org) in spec.node_orgs.iter().enumerate() {
            let token = cluster.admin(&["invite", "--org", org])?.trim().to_string();
            let dir = cluster.root.join(format!("n{i}"));
            std::fs::create_dir_all(&dir)?;
            let listen = loopback(free_port()?);
            let metrics = loopback(free_port()?);
            let config = dir.join("node.toml");
            std::fs::write(
                &config,
                format!(
                    "data_dir = {data:?}\nlisten = \"{listen}\"\nmetrics_listen = \"{metrics}\"\n\
                     coordinator_key = \"{key}\"\njoin = \"{token}\"\norg = \"{org}\"\n\
                     site = \"site-{org}\"\n{extra}\n",
                    data = dir.join("data").display().to_string(),
                    key = cluster.coordinator_key,
                    extra = spec.node_toml,
                ),
            )?;
            let mut node = NodeProc {
                org: org.clone(),
                dir,
                id: String::new(),
                listen,
                metrics,
                skew_secs: None,
                config,
                proc: Proc {
                    child: None,
                    paused: false,
                },
            };
            node.start(&bin)?;
            cluster.nodes.push(node);
        }
        let ids: Vec<String> = cluster.nodes.iter().map(|n| n.id.clone()).collect();
        cluster.wait_nodes("every node heartbeated", START_LIMIT, |view| {
            ids.iter().all(|id| {
                view.iter()
                    .any(|n| n["id"] == id.as_str() && n["last_heartbeat_ms"].is_u64())
            })
        })?;

        let quic: Vec<SocketAddr> = cluster.members.iter().map(|m| m.quic).collect();
        for i in 0..spec.gateways {
            let mut gateway = GatewayProc {
                dir: cluster.root.join(format!("gw{i}")),
                listen: loopback(free_port()?),
                endpoint: String::new(),
                key: String::new(),
                proc: Proc {
                    child: None,
                    paused: false,
                },
            };
            gateway.start(&bin, &quic, &cluster.coordinator_key)?;
            cluster.admin(&["gateway", "add", &gateway.key, "--name", &format!("gw-{i}")])?;
            cluster.gateways.push(gateway);
        }
        Ok(cluster)
    }

    /// Runs `cairn admin ARGS` against the first member that answers (the CLI itself
    /// retries a follower's refusal at the leader); stdout, or every member's complaint.
    pub fn admin(&self, args: &[&str]) -> Result<String> {
        let mut complaints = Vec::new();
        for member in self.members.iter().filter(|m| m.running() && !m.paused()) {
            let mut command = Command::new(&self.bin);
            command
                .arg("admin")
                .args(["--endpoint", &member.url()])
                .args(args)
                .env("CAIRN_ADMIN_TOKEN", &self.token);
            match run_with_limit(command, ADMIN_LIMIT) {
                Ok(out) => return Ok(out),
                Err(err) => complaints.push(format!("member {}: {err}", member.id)),
            }
        }
        fail(format!(
            "cairn admin {}: {}",
            args.join(" "),
            complaints.join("; ")
        ))
    }

    /// `cairn admin --json ARGS`, parsed.
    pub fn admin_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let text = self.admin(&all)?;
        serde_json::from_str(&text).map_err(|err| HarnessError(format!("{err}: {text}")))
    }

    /// The status as one member reports it.
    fn member_status(&self, member: &MemberProc) -> Result<serde_json::Value> {
        let mut command = Command::new(&self.bin);
        command
            .arg("admin")
            .args(["--endpoint", &member.url(), "--json", "status"])
            .env("CAIRN_ADMIN_TOKEN", &self.token);
        let text = run_with_limit(command, ADMIN_LIMIT)?;
        serde_json::from_str(&text).map_err(|err| HarnessError(format!("{err}: {text}")))
    }

    /// The leader's own status (with its durability survey), asked of the leader once a
    /// reachable member names it.
    pub fn status(&self) -> Result<serde_json::Value> {
        let leader = self.leader()?;
        let Some(member) = self.members.iter().find(|m| m.id == leader) else {
            return fail(format!("leader {leader} is no member"));
        };
        self.member_status(member)
    }

    /// The Raft leader, as the first running member that answers names it.
    pub fn leader(&self) -> Result<u64> {
        for member in self.members.iter().filter(|m| m.running() && !m.paused()) {
            if let Ok(status) = self.member_status(member)
                && let Some(leader) = status["leader"].as_u64()
            {
                return Ok(leader);
            }
        }
        fail("no member names a leader")
    }

    /// The leader member `id` itself names, if it answers in time (a member cut off from
    /// the others may still name itself).
    pub fn leader_named_by(&self, id: u64) -> Option<u64> {
        let member = self.members.iter().find(|m| m.id == id)?;
        if !member.running() || member.paused() {
            return None;
        }
        self.member_status(member).ok()?["leader"].as_u64()
    }

    /// Polls the leader's status until `check` holds, for at most `limit`.
    pub fn wait_status(
        &self,
        what: &str,
        limit: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        let deadline = Instant::now() + limit;
        loop {
            let last = match self.status() {
                Ok(status) if check(&status) => return Ok(status),
                Ok(status) => status.to_string(),
                Err(err) => err.0,
            };
            if Instant::now() >= deadline {
                return fail(format!("never: {what}; last: {last}"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Polls `cairn admin nodes` until `check` holds, for at most `limit`.
    pub fn wait_nodes(
        &self,
        what: &str,
        limit: Duration,
        check: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Result<Vec<serde_json::Value>> {
        let deadline = Instant::now() + limit;
        loop {
            let last = match self.admin_json(&["nodes"]) {
                Ok(serde_json::Value::Array(view)) if check(&view) => return Ok(view),
                Ok(other) => other.to_string(),
                Err(err) => err.0,
            };
            if Instant::now() >= deadline {
                return fail(format!("never: {what}; last: {last}"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Creates a bucket with `k` + `m` shards, segments of `segment_size` (e.g. `1MiB`),
    /// tolerating `failure_tolerance` organisations lost at once.
    pub fn create_bucket(
        &self,
        name: &str,
        k: u16,
        m: u16,
        segment_size: &str,
        failure_tolerance: u8,
    ) -> Result<()> {
        self.admin(&[
            "bucket",
            "create",
            name,
            "--k",
            &k.to_string(),
            "--m",
            &m.to_string(),
            "--segment-size",
            segment_size,
            "--failure-tolerance",
            &failure_tolerance.to_string(),
        ])
        .map(drop)
    }

    /// A new S3 access key: (id, secret).
    pub fn create_key(&self, name: &str) -> Result<(String, String)> {
        let key = self.admin_json(&["key", "create", "--name", name])?;
        match (key["id"].as_str(), key["secret"].as_str()) {
            (Some(id), Some(secret)) => Ok((id.to_string(), secret.to_string())),
            _ => fail(format!("no key in {key}")),
        }
    }

    fn member_index(&self, id: u64) -> Result<usize> {
        self.members
            .iter()
            .position(|m| m.id == id)
            .ok_or_else(|| HarnessError(format!("no member {id}")))
    }

    /// SIGSTOPs member `id`.
    pub fn pause_member(&mut self, id: u64) -> Result<()> {
        let i = self.member_index(id)?;
        self.members[i].proc.signal("-STOP")
    }

    /// SIGCONTs member `id`.
    pub fn resume_member(&mut self, id: u64) -> Result<()> {
        let i = self.member_index(id)?;
        self.members[i].proc.signal("-CONT")
    }

    /// SIGKILLs member `id`.
    pub fn kill_member(&mut self, id: u64) -> Result<()> {
        let i = self.member_index(id)?;
        self.members[i].proc.kill9();
        Ok(())
    }

    /// Starts member `id` again on its data dir.
    pub fn restart_member(&mut self, id: u64) -> Result<()> {
        let i = self.member_index(id)?;
        let bin = self.bin.clone();
        self.members[i].proc.kill9();
        self.members[i].start(&bin, false).map(drop)
    }

    /// Cuts member `id` off from every other member, both ways; gateways and nodes still
    /// reach it on its own port.
    pub fn partition_member(&self, id: u64) -> Result<()> {
        let i = self.member_index(id)?;
        let others: Vec<SocketAddr> = self
            .members
            .iter()
            .filter(|m| m.id != id)
            .map(|m| m.quic)
            .collect();
        self.members[i].relay.block(others);
        let cut = self.members[i].quic;
        for member in self.members.iter().filter(|m| m.id != id) {
            member.relay.block([cut]);
        }
        Ok(())
    }

    /// Ends every partition.
    pub fn heal(&self) {
        for member in &self.members {
            member.relay.heal();
        }
    }

    /// Datagrams the members' relays forwarded and dropped so far.
    pub fn relay_counts(&self) -> (u64, u64) {
        self.members.iter().fold((0, 0), |(f, d), m| {
            let (mf, md) = m.relay.counts();
            (f + mf, d + md)
        })
    }

    /// SIGKILLs node `i`.
    pub fn kill_node(&mut self, i: usize) -> Result<()> {
        let Some(node) = self.nodes.get_mut(i) else {
            return fail(format!("no node {i}"));
        };
        node.proc.kill9();
        Ok(())
    }

    /// Starts node `i` again on its data dir and address, its clock moved by `skew_secs`
    /// if given (through libfaketime).
    pub fn restart_node(&mut self, i: usize, skew_secs: Option<i64>) -> Result<()> {
        let bin = self.bin.clone();
        let Some(node) = self.nodes.get_mut(i) else {
            return fail(format!("no node {i}"));
        };
        node.proc.kill9();
        node.skew_secs = skew_secs;
        node.start(&bin)
    }

    /// Returns node `i` to service if the leader declared it lost while it was down (the
    /// runbook's `cairn admin node-state ID vetting` for a node that came back intact);
    /// waits for its first heartbeat since the restart either way. Returns the state it
    /// was found in.
    pub fn readmit_node(&self, i: usize, limit: Duration) -> Result<String> {
        let Some(node) = self.nodes.get(i) else {
            return fail(format!("no node {i}"));
        };
        let id = node.id.clone();
        let view = self.wait_nodes("the restarted node heartbeats", limit, |view| {
            view.iter().any(|n| {
                n["id"] == id.as_str()
                    && n["last_heartbeat_ms"].as_u64().is_some_and(|ms| ms < 1_000)
            })
        })?;
        let state = view
            .iter()
            .find(|n| n["id"] == id.as_str())
            .and_then(|n| n["state"].as_str())
            .unwrap_or_default()
            .to_string();
        if state == "lost" {
            self.admin(&["node-state", &id, "vetting"])?;
        }
        Ok(state)
    }

    /// SIGKILLs gateway `i`.
    pub fn kill_gateway(&mut self, i: usize) -> Result<()> {
        let Some(gateway) = self.gateways.get_mut(i) else {
            return fail(format!("no gateway {i}"));
        };
        gateway.proc.kill9();
        Ok(())
    }

    /// Starts gateway `i` again on its data dir (same key) and address.
    pub fn restart_gateway(&mut self, i: usize) -> Result<()> {
        let bin = self.bin.clone();
        let quic: Vec<SocketAddr> = self.members.iter().map(|m| m.quic).collect();
        let key = self.coordinator_key.clone();
        let Some(gateway) = self.gateways.get_mut(i) else {
            return fail(format!("no gateway {i}"));
        };
        gateway.proc.kill9();
        gateway.start(&bin, &quic, &key)
    }

    /// Sums node `i`'s metric `name` over the series whose labels contain `labels` (empty:
    /// all), from its `/metrics`.
    pub fn node_metric(&self, i: usize, name: &str, labels: &str) -> Result<f64> {
        let Some(node) = self.nodes.get(i) else {
            return fail(format!("no node {i}"));
        };
        let url = format!("http://{}/metrics", node.metrics);
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .new_agent();
        let mut response = agent
            .get(&url)
            .call()
            .map_err(|err| HarnessError(format!("{url}: {err}")))?;
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|err| HarnessError(format!("{url}: {err}")))?;
        Ok(metric_sum(&body, name, labels))
    }

    /// Waits until a durability survey that began after `after_ms` (Unix ms) shows every
    /// segment at margin `full` and none unreadable; returns how long that took from the
    /// call. (The repair queue may still hold rebalancing moves: they change no margin.)
    pub fn wait_full_margin(&self, after_ms: u64, full: i64, limit: Duration) -> Result<Duration> {
        let start = Instant::now();
        self.wait_status("every segment at full margin", limit, |s| {
            let d = &s["durability"];
            d["surveyed_ms"].as_u64().is_some_and(|at| at > after_ms)
                && d["unreadable"] == 0
                && d["segments_by_margin"].as_object().is_some_and(|m| {
                    m.iter()
                        .all(|(margin, count)| margin == &full.to_string() || count == 0)
                })
        })?;
        Ok(start.elapsed())
    }
}

/// Sums the samples of `name` whose label set contains `labels`, in Prometheus text.
fn metric_sum(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (series, value) = rest.rsplit_once(' ')?;
            let series_ok = series.is_empty() || series.starts_with('{');
            (series_ok && series.contains(labels))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// Runs `command` to completion within `limit`; its stdout, or its stderr as the error.
fn run_with_limit(mut command: Command, limit: Duration) -> Result<String> {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn()?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(pipe) = stdout.as_mut() {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(pipe) = stderr.as_mut() {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    match status {
        Some(status) if status.success() => Ok(out),
        Some(_) => fail(err.trim().to_string()),
        None => fail(format!("no answer within {limit:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_pick_the_named_series() {
        let text = "# HELP x\ncairn_node_requests_total{op=\"get\",result=\"ok\"} 3\n\
                    cairn_node_requests_total{op=\"get\",result=\"expired\"} 2\n\
                    cairn_node_requests_total{op=\"audit\",result=\"expired\"} 5\n\
                    cairn_node_start_timestamp_seconds 1700000000\n\
                    cairn_node_start_timestamp_seconds_extra 1\n";
        assert_eq!(
            metric_sum(text, "cairn_node_requests_total", "result=\"expired\""),
            7.0
        );
        assert_eq!(metric_sum(text, "cairn_node_requests_total", ""), 10.0);
        assert_eq!(
            metric_sum(text, "cairn_node_start_timestamp_seconds", ""),
            1_700_000_000.0
        );
    }

    #[test]
    fn a_command_past_its_limit_is_stopped() {
        let mut command = Command::new("sleep");
        command.arg("10");
        let started = Instant::now();
        assert!(run_with_limit(command, Duration::from_millis(200)).is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
        let mut command = Command::new("echo");
        command.arg("hi");
        assert_eq!(
            run_with_limit(command, Duration::from_secs(5)).unwrap(),
            "hi\n"
        );
    }
}
