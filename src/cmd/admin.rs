//! `cairn admin`: the operator's client for a coordinator's admin API.

use anyhow::{Context as _, bail};
use cairn_client::admin_views::{
    AddMember, BucketView, CreateBucket, CreateInvite, CreateKey, ErrorView, GatewayView,
    InviteView, KeyView, MemberView, NewKey, NodeView, RegisterGateway, SetNodeState, StatusView,
};
use cairn_proto::bytesize::ByteSize;
use clap::{Args, Subcommand};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Options of `cairn admin`.
#[derive(Args)]
pub struct AdminArgs {
    /// Admin API of any coordinator member (writes are redirected to the leader).
    #[arg(
        long,
        env = "CAIRN_ADMIN_ENDPOINT",
        default_value = "http://127.0.0.1:7301"
    )]
    endpoint: String,
    /// Admin token (printed by the first start of the coordinator, kept in its data dir).
    #[arg(long, env = "CAIRN_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
    /// Print the API's JSON instead of tables, for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Leader, members, node states and catalog totals.
    Status,
    /// List coordinator members, or add one.
    Members {
        #[command(subcommand)]
        action: Option<MemberAction>,
    },
    /// List storage nodes: state, domains, last heartbeat, and their record of conduct
    /// (audit score from 0 to 1, audits passed and failed, bad reads gateways reported).
    Nodes,
    /// Decide a node's lifecycle state: `active` (trusted with a full share of new shards),
    /// `draining`, `gone`, `disqualified`, or back to `vetting`.
    NodeState {
        /// The node's id (from `cairn admin nodes`).
        id: String,
        /// The new state.
        state: String,
    },
    /// Work on one storage node.
    Node {
        #[command(subcommand)]
        action: NodeAction,
    },
    /// List buckets (same as `bucket list`).
    Buckets,
    /// Create or list buckets.
    Bucket {
        #[command(subcommand)]
        action: BucketAction,
    },
    /// List access keys (same as `key list`).
    Keys,
    /// Create, list or revoke S3 access keys.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// List registered gateways (same as `gateway list`).
    Gateways,
    /// Register, list or remove S3 gateways: only registered gateway keys may use the
    /// coordinator (and see S3 secrets).
    Gateway {
        #[command(subcommand)]
        action: GatewayAction,
    },
    /// Write a consistent backup of the whole catalog to FILE; restore it with
    /// `cairn coordinator --init --restore FILE` on a fresh data dir.
    Backup {
        /// Where to write the backup (replaced atomically).
        file: std::path::PathBuf,
    },
    /// Check a nix-cache bucket through the S3 gateway: every narinfo signed by a trusted
    /// key, the NAR it names present with its FileSize (and with --deep its hashes), and no
    /// NAR that no narinfo names. Faults are named; the exit status says whether there
    /// were any.
    Verify(Box<super::verify::VerifyArgs>),
    /// Make a one-time invitation for a storage node; its operator runs
    /// `cairn node --join TOKEN`.
    Invite {
        /// Hours the invitation stays valid.
        #[arg(long, default_value_t = 24)]
        valid_hours: u64,
        /// The organisation the node belongs to (required): the node is refused unless its
        /// `org` is this one, and keeps it for good. Per-organisation placement limits rest
        /// on organisations being what the operator vouches for, not what a node claims.
        #[arg(long)]
        org: String,
    },
}

#[derive(Subcommand)]
enum NodeAction {
    /// Move every shard off a node, then retire it: it turns `draining` at once (no new
    /// shards, its shards are rebuilt elsewhere at the repair rate while it keeps serving
    /// them) and `gone` when nothing depends on it. Shows progress until then.
    Drain {
        /// The node's id (from `cairn admin nodes`).
        id: String,
        /// Start the drain and return without waiting for it to finish.
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Subcommand)]
enum MemberAction {
    /// Add a member: it joins as a learner, catches up, then becomes a voter. Start it
    /// first, with a copy of the group's coordinator.key in its data dir.
    Add {
        /// Its Raft id (unique, never reused).
        #[arg(long)]
        id: u64,
        /// Its QUIC address.
        #[arg(long)]
        addr: String,
        /// Its admin API address.
        #[arg(long)]
        admin: String,
        /// Its own key, printed at its start as `member key: …` (kept in its data dir as
        /// member.key): the only key other members accept its Raft traffic from.
        #[arg(long)]
        key: String,
    },
}

#[derive(Subcommand)]
enum BucketAction {
    /// Create a bucket.
    Create {
        /// Bucket name (S3 rules: 3-63 lower-case letters, digits, '-' and '.').
        name: String,
        /// Allow anonymous GET and HEAD (what a CDN in front of a public cache needs).
        #[arg(long)]
        public_read: bool,
        /// Check Nix authenticity of uploads (signed narinfos, NARs matching their names).
        #[arg(long)]
        nix_cache: bool,
        /// A trusted narinfo signing key, NAME:BASE64 (repeat for several).
        #[arg(long = "trusted-key")]
        trusted_keys: Vec<String>,
        /// Data shards per segment [default: the coordinator's].
        #[arg(long)]
        k: Option<u16>,
        /// Parity shards per segment [default: the coordinator's].
        #[arg(long)]
        m: Option<u16>,
        /// Largest segment objects are cut into, e.g. 64MiB [default: 64MiB].
        #[arg(long)]
        segment_size: Option<cairn_proto::bytesize::ByteSize>,
        /// Organisations that may be lost at once with every segment still readable
        /// [default: 2].
        #[arg(long)]
        failure_tolerance: Option<u8>,
    },
    /// List buckets.
    List,
}

#[derive(Subcommand)]
enum KeyAction {
    /// Create an access key; its secret is shown once.
    Create {
        /// What the key is for (e.g. "hydra").
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List access keys (without secrets).
    List,
    /// Revoke an access key.
    Revoke {
        /// Access key id.
        id: String,
    },
}

#[derive(Subcommand)]
enum GatewayAction {
    /// Register a gateway by its key (`cairn gateway` prints it at start).
    Add {
        /// The gateway's public key.
        key: String,
        /// What to call it (e.g. "edge-1").
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List registered gateways.
    List,
    /// Withdraw a gateway's access; its open connections are refused from the next request.
    Remove {
        /// The gateway's public key.
        key: String,
    },
}

/// How often a request whose answer was lost is sent again.
const LOST_ANSWER_RETRIES: usize = 2;

/// One admin API session.
struct Api {
    agent: ureq::Agent,
    endpoint: String,
    token: String,
}

impl Api {
    fn new(endpoint: &str, token: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(60)))
            .build()
            .new_agent();
        Self {
            agent,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    /// Calls the API; a follower's 503 with a leader address is retried at the leader, and
    /// a request whose answer was lost (a refused or dropped connection, a timeout) is sent
    /// again. A write carries one `Idempotency-Key` across its attempts, so the coordinator
    /// applies it at most once and answers a resend with the first attempt's outcome.
    fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<T> {
        let mut key = [0u8; 16];
        getrandom::fill(&mut key).context("no randomness for an idempotency key")?;
        let key: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let mut endpoint = self.endpoint.clone();
        let mut lost = 0;
        for _ in 0..3 + LOST_ANSWER_RETRIES {
            let url = format!("{endpoint}{path}");
            let auth = format!("Bearer {}", self.token);
            let response = match (method, body) {
                ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
                ("DELETE", _) => self
                    .agent
                    .delete(&url)
                    .header("Authorization", &auth)
                    .header("Idempotency-Key", &key)
                    .call(),
                (_, Some(body)) => self
                    .agent
                    .post(&url)
                    .header("Authorization", &auth)
                    .header("Idempotency-Key", &key)
                    .send_json(body),
                _ => self
                    .agent
                    .post(&url)
                    .header("Authorization", &auth)
                    .header("Idempotency-Key", &key)
                    .send_empty(),
            };
            let mut response = match response {
                Ok(response) => response,
                Err(err) if lost < LOST_ANSWER_RETRIES => {
                    lost += 1;
                    eprintln!("no answer from {endpoint} ({err}); asking again");
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    continue;
                }
                Err(err) => {
                    return Err(err)
                        .with_context(|| format!("cannot reach the admin API at {endpoint}"));
                }
            };
            let status = response.status();
            let text = response
                .body_mut()
                .read_to_string()
                .context("reading the answer")?;
            if status.is_success() {
                return serde_json::from_str(&text)
                    .with_context(|| format!("unexpected answer: {text}"));
            }
            let error: ErrorView = serde_json::from_str(&text).unwrap_or(ErrorView {
                error: text.clone(),
                leader: None,
            });
            match error.leader {
                Some(leader) if status.as_u16() == 503 => endpoint = format!("http://{leader}"),
                _ => bail!("{} ({})", error.error, status),
            }
        }
        bail!("no leader answered")
    }

    /// A binary answer (backups), from the leader.
    fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let mut endpoint = self.endpoint.clone();
        for _ in 0..3 {
            let mut response = self
                .agent
                .get(format!("{endpoint}{path}"))
                .header("Authorization", format!("Bearer {}", self.token))
                .call()
                .with_context(|| format!("cannot reach the admin API at {endpoint}"))?;
            let status = response.status();
            let bytes = response
                .body_mut()
                .with_config()
                .limit(u64::MAX)
                .read_to_vec()
                .context("reading the answer")?;
            if status.is_success() {
                return Ok(bytes);
            }
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let error: ErrorView = serde_json::from_str(&text).unwrap_or(ErrorView {
                error: text,
                leader: None,
            });
            match error.leader {
                Some(leader) if status.as_u16() == 503 => endpoint = format!("http://{leader}"),
                _ => bail!("{} ({})", error.error, status),
            }
        }
        bail!("no leader answered")
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call::<(), T>("GET", path, None)
    }

    fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        self.call("POST", path, Some(body))
    }
}

/// Shows a drain's progress (shards still placed on the node) until the node is gone.
fn follow_drain(api: &Api, id: &str) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "draining {prefix} [{bar:40}] {pos}/{len} shards moved ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(id.chars().take(12).collect::<String>());
    let mut total: Option<u64> = None;
    loop {
        let nodes: Vec<NodeView> = api.get("/v1/nodes")?;
        let node = nodes
            .iter()
            .find(|n| n.id == id)
            .with_context(|| format!("node {id} is no longer listed"))?;
        if node.state == "gone" {
            if let Some(total) = total {
                bar.set_position(total);
            }
            bar.finish();
            println!("node {id} is gone: every shard it held lives elsewhere");
            return Ok(());
        }
        if node.state != "draining" {
            bar.abandon();
            bail!("node {id} is {} now: the drain was stopped", node.state);
        }
        if let Some(left) = node.placed_shards {
            let start = *total.get_or_insert(left);
            if left > start {
                // New placements raced the drain's start; count from the larger number.
                total = Some(left);
            }
            let start = total.unwrap_or(left);
            bar.set_length(start);
            bar.set_position(start - left);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Runs one admin command.
pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.endpoint, &args.token);
    let json = args.json;
    match args.command {
        AdminCommand::Status => status(&api, json),
        AdminCommand::Members { action } => members(&api, json, action),
        AdminCommand::Nodes => list_nodes(&api, json),
        AdminCommand::NodeState { id, state } => set_node_state(&api, json, &id, state),
        AdminCommand::Node { action } => node(&api, json, action),
        AdminCommand::Buckets => bucket(&api, json, BucketAction::List),
        AdminCommand::Bucket { action } => bucket(&api, json, action),
        AdminCommand::Keys => key(&api, json, KeyAction::List),
        AdminCommand::Key { action } => key(&api, json, action),
        AdminCommand::Gateways => gateway(&api, json, GatewayAction::List),
        AdminCommand::Gateway { action } => gateway(&api, json, action),
        AdminCommand::Backup { file } => backup(&api, json, &file),
        AdminCommand::Verify(args) => verify(&api, json, *args),
        AdminCommand::Invite { valid_hours, org } => invite(&api, json, valid_hours, org),
    }
}

/// `cairn admin status`.
fn status(api: &Api, json: bool) -> anyhow::Result<()> {
    let status: StatusView = api.get("/v1/status")?;
    print(json, &status, || print_status(&status))
}

/// The status as a table: the member, the catalog's totals, node states, durability, the
/// members.
fn print_status(status: &StatusView) {
    let leader = status.leader.map_or("none".to_string(), |l| l.to_string());
    println!(
        "member {}  leader {leader}  term {}  applied {}",
        status.member,
        status.term,
        status.last_applied.unwrap_or(0)
    );
    println!("coordinator key {}", status.coordinator_key);
    println!(
        "buckets {}  objects {}  logical {}",
        status.buckets,
        status.objects,
        ByteSize(status.logical_bytes)
    );
    let states: Vec<String> = status
        .nodes_by_state
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
    println!(
        "nodes: {}",
        if states.is_empty() {
            "none".into()
        } else {
            states.join(", ")
        }
    );
    match &status.durability {
        Some(d) => {
            let margins: Vec<String> = d
                .segments_by_margin
                .iter()
                .rev()
                .map(|(margin, n)| format!("{n} at margin {margin}"))
                .collect();
            println!(
                "segments: {}  ({} unreadable)",
                if margins.is_empty() {
                    "none".into()
                } else {
                    margins.join(", ")
                },
                d.unreadable
            );
            let moved: Vec<String> = d
                .moved
                .iter()
                .map(|(reason, m)| format!("{reason} {} shards", m.shards))
                .collect();
            println!(
                "repair queue {}  in progress {}  moved: {}  stored {}  stored/logical {}",
                d.repair_queue,
                d.repairs_in_progress,
                moved.join(", "),
                ByteSize(d.stored_bytes),
                d.stored_per_logical
                    .map_or("-".to_string(), |r| format!("{r:.2}"))
            );
            println!(
                "modelled annual loss probability {:.2e}  ({:.2} node failures per node-year, repair window {:.0} s)",
                d.loss_model.annual_loss_probability,
                d.loss_model.failures_per_node_year,
                d.loss_model.repair_window_secs
            );
        }
        None => println!("durability: not surveyed (ask the leader)"),
    }
    print_members(&status.members);
}

/// `cairn admin members [add]`.
fn members(api: &Api, json: bool, action: Option<MemberAction>) -> anyhow::Result<()> {
    let members: Vec<MemberView> = match action {
        None => api.get("/v1/members")?,
        Some(MemberAction::Add {
            id,
            addr,
            admin,
            key,
        }) => api.post(
            "/v1/members",
            &AddMember {
                id,
                addr,
                admin,
                key,
            },
        )?,
    };
    print(json, &members, || print_members(&members))
}

/// `cairn admin nodes`.
fn list_nodes(api: &Api, json: bool) -> anyhow::Result<()> {
    let nodes: Vec<NodeView> = api.get("/v1/nodes")?;
    print(json, &nodes, || {
        println!(
            "{:<52}  {:<12}  {:<16}  {:<10}  {:>21}  {:>10}  {:>5}  {:>13}  {:>9}",
            "id",
            "state",
            "org",
            "site",
            "used / capacity",
            "heartbeat",
            "score",
            "audits ok/bad",
            "bad reads"
        );
        for n in &nodes {
            let beat = n.last_heartbeat_ms.map_or("-".to_string(), |ms| {
                format!("{:.1}s ago", ms as f64 / 1000.0)
            });
            let audits = format!("{}/{}", n.audits_passed, n.audits_failed);
            // Used is known only from heartbeats, which reach the leader.
            let fill = match n.used {
                Some(used) => format!("{} / {}", ByteSize(used), ByteSize(n.capacity)),
                None => format!("- / {}", ByteSize(n.capacity)),
            };
            println!(
                "{:<52}  {:<12}  {:<16}  {:<10}  {:>21}  {:>10}  {:>5.3}  {:>13}  {:>9}",
                n.id, n.state, n.org, n.site, fill, beat, n.score, audits, n.bad_reads
            );
        }
    })
}

/// `cairn admin node-state ID STATE`.
fn set_node_state(api: &Api, json: bool, id: &str, state: String) -> anyhow::Result<()> {
    let node: NodeView = api.post(&format!("/v1/nodes/{id}/state"), &SetNodeState { state })?;
    print(json, &node, || {
        println!("node {} is {}", node.id, node.state)
    })
}

/// `cairn admin node drain`.
fn node(api: &Api, json: bool, action: NodeAction) -> anyhow::Result<()> {
    let NodeAction::Drain { id, no_wait } = action;
    let node: NodeView = api.post(
        &format!("/v1/nodes/{id}/state"),
        &SetNodeState {
            state: "draining".into(),
        },
    )?;
    if no_wait || json {
        return print(json, &node, || {
            println!("node {} is {}", node.id, node.state)
        });
    }
    follow_drain(api, &node.id)
}

/// `cairn admin bucket create|list` (and `buckets`).
fn bucket(api: &Api, json: bool, action: BucketAction) -> anyhow::Result<()> {
    match action {
        BucketAction::List => {
            let buckets: Vec<BucketView> = api.get("/v1/buckets")?;
            print(json, &buckets, || {
                for b in &buckets {
                    let access = if b.public_read {
                        "public-read"
                    } else {
                        "private"
                    };
                    println!(
                        "{:<40}  {:<9}  {:<11}  {}+{}",
                        b.name, b.mode, access, b.k, b.m
                    );
                }
            })
        }
        BucketAction::Create {
            name,
            public_read,
            nix_cache,
            trusted_keys,
            k,
            m,
            segment_size,
            failure_tolerance,
        } => {
            let request = CreateBucket {
                name,
                public_read,
                nix_cache,
                trusted_keys,
                k,
                m,
                segment_size: segment_size.map(|s| s.0),
                failure_tolerance,
            };
            let bucket: BucketView = api.post("/v1/buckets", &request)?;
            print(json, &bucket, || {
                println!(
                    "created bucket {} ({}, {}+{})",
                    bucket.name, bucket.mode, bucket.k, bucket.m
                )
            })
        }
    }
}

/// `cairn admin key create|list|revoke` (and `keys`).
fn key(api: &Api, json: bool, action: KeyAction) -> anyhow::Result<()> {
    match action {
        KeyAction::List => {
            let keys: Vec<KeyView> = api.get("/v1/keys")?;
            print(json, &keys, || {
                for k in &keys {
                    println!(
                        "{:<24}  {:<8}  {}",
                        k.id,
                        if k.revoked { "revoked" } else { "active" },
                        k.name
                    );
                }
            })
        }
        KeyAction::Create { name } => {
            let key: NewKey = api.post("/v1/keys", &CreateKey { name })?;
            print(json, &key, || {
                println!("access key id:     {}", key.id);
                println!("secret access key: {}", key.secret);
                println!("(the secret is not shown again)");
            })
        }
        KeyAction::Revoke { id } => {
            let key: KeyView = api.call::<(), _>("POST", &format!("/v1/keys/{id}/revoke"), None)?;
            print(json, &key, || println!("revoked {}", key.id))
        }
    }
}

/// `cairn admin gateway add|list|remove` (and `gateways`).
fn gateway(api: &Api, json: bool, action: GatewayAction) -> anyhow::Result<()> {
    match action {
        GatewayAction::List => {
            let gateways: Vec<GatewayView> = api.get("/v1/gateways")?;
            print(json, &gateways, || {
                for g in &gateways {
                    println!("{}  {}", g.key, g.name);
                }
            })
        }
        GatewayAction::Add { key, name } => {
            let gateway: GatewayView = api.post("/v1/gateways", &RegisterGateway { key, name })?;
            print(json, &gateway, || {
                println!("registered gateway {} ({})", gateway.key, gateway.name)
            })
        }
        GatewayAction::Remove { key } => {
            let gateway: GatewayView =
                api.call::<(), _>("DELETE", &format!("/v1/gateways/{key}"), None)?;
            print(json, &gateway, || {
                println!("removed gateway {}", gateway.key)
            })
        }
    }
}

/// `cairn admin backup FILE`.
fn backup(api: &Api, json: bool, file: &std::path::Path) -> anyhow::Result<()> {
    let bytes = api.get_bytes("/v1/backup")?;
    // Checked before it is kept: a backup that does not read back is no backup.
    let backup = cairn_coordinator::catalog::read_backup(&bytes)
        .map_err(|err| anyhow::anyhow!("the coordinator sent an unreadable backup: {err}"))?;
    write_atomically(file, &bytes)?;
    let needs = backup.coordinator.map(|key| key.to_string());
    let summary = serde_json::json!({
        "file": file.display().to_string(),
        "bytes": bytes.len(),
        "coordinator_key": needs,
    });
    print(json, &summary, || {
        println!(
            "wrote {} bytes of catalog to {}",
            bytes.len(),
            file.display()
        );
        if let Some(key) = &needs {
            println!(
                "restoring it needs the coordinator key {key}: keep a copy of \
                 coordinator.key (escrowed, apart from the backup)"
            );
        }
    })
}

/// `cairn admin verify`.
fn verify(api: &Api, json: bool, args: super::verify::VerifyArgs) -> anyhow::Result<()> {
    // The bucket's mode and trusted keys come from the coordinator; the walk itself goes
    // through the S3 gateway.
    let buckets: Vec<BucketView> = api.get("/v1/buckets")?;
    super::verify::run(args, &buckets, json)
}

/// `cairn admin invite --org ORG`.
fn invite(api: &Api, json: bool, valid_hours: u64, org: String) -> anyhow::Result<()> {
    let request = CreateInvite {
        valid_hours: Some(valid_hours),
        org: Some(org),
    };
    let invite: InviteView = api.post("/v1/invites", &request)?;
    print(json, &invite, || {
        println!("{}", invite.token);
        eprintln!("(one node may join with this token; valid for {valid_hours} h)");
    })
}

/// Writes `bytes` to `path` via a temporary file, fsynced, then renamed over it.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn print_members(members: &[MemberView]) {
    for m in members {
        println!(
            "  member {:<4} {:<8} quic {:<22} admin {:<22} key {}",
            m.id,
            if m.voter { "voter" } else { "learner" },
            m.addr,
            m.admin,
            m.key
        );
    }
}

/// JSON for scripts, or the table for people.
fn print<T: Serialize>(json: bool, value: &T, table: impl FnOnce()) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        table();
    }
    Ok(())
}
