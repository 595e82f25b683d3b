//! A whole small cluster of real processes: one `cairn coordinator` member and storage
//! nodes that joined it with invitations, as an operator would set it up.

use std::time::{Duration, Instant};

use cairn_client::gateway_rpc::{GatewayRequest, GatewayResponse};
use cairn_client::records::ObjectRecord;
use cairn_proto::identity::{PublicKey, SecretKey};

use super::NodeProcess;
use super::coordinator::{Member, admin};

/// A coordinator and its joined nodes.
pub struct TestCluster {
    pub coordinator: Member,
    pub key: PublicKey,
    pub nodes: Vec<NodeProcess>,
    pub root: tempfile::TempDir,
}

impl TestCluster {
    /// Starts a one-member coordinator and one node per entry of `orgs` (its organisation),
    /// each joined with its own invitation; returns once every node has heartbeated.
    pub fn start(orgs: &[&str]) -> TestCluster {
        Self::start_with(orgs, &[])
    }

    /// Like [`TestCluster::start`], with extra `cairn coordinator` flags (shorter timers).
    pub fn start_with(orgs: &[&str], coordinator_flags: &[&str]) -> TestCluster {
        let root = tempfile::tempdir().unwrap();
        let mut coordinator = Member::new(1, root.path());
        coordinator.start_with(true, coordinator_flags);
        let key = SecretKey::load(&coordinator.dir.join("coordinator.key"))
            .unwrap()
            .public();
        let mut cluster = TestCluster {
            coordinator,
            key,
            nodes: Vec::new(),
            root,
        };
        for org in orgs {
            cluster.add_node(org);
        }
        cluster.wait_nodes(|node| node["last_heartbeat_ms"].is_u64());
        cluster
    }

    /// Invites one more node in `org` and starts it (ready once it serves; its first
    /// heartbeat follows within 100 ms).
    pub fn add_node(&mut self, org: &str) -> &NodeProcess {
        let command = [
            std::path::PathBuf::from(env!("CARGO_BIN_EXE_cairn")),
            "node".into(),
        ];
        self.add_node_as(org, &command)
    }

    /// Like [`TestCluster::add_node`], running `command` (program and leading arguments;
    /// it is given `--config FILE`) instead of `cairn node`.
    pub fn add_node_as(&mut self, org: &str, command: &[std::path::PathBuf]) -> &NodeProcess {
        self.add_node_with(org, command, "")
    }

    /// [`TestCluster::add_node_as`] with `extra` config lines.
    pub fn add_node_with(
        &mut self,
        org: &str,
        command: &[std::path::PathBuf],
        extra: &str,
    ) -> &NodeProcess {
        let token = admin(&self.coordinator, &["invite", "--org", org])
            .unwrap()
            .trim()
            .to_string();
        let dir = self.root.path().join(format!("n{}", self.nodes.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "join = \"{token}\"\norg = \"{org}\"\nsite = \"site-{org}\"\nheartbeat_interval_ms = 100\ncapacity = \"1GiB\"\n{extra}"
        );
        self.nodes
            .push(NodeProcess::start_as(command, &dir, &self.key, &config));
        self.nodes.last().unwrap()
    }

    /// The coordinator's secret key (tests use it to forge what only the coordinator may
    /// sign, and to check what it signed).
    pub fn coordinator_secret(&self) -> SecretKey {
        SecretKey::load(&self.coordinator.dir.join("coordinator.key")).unwrap()
    }

    /// `cairn admin nodes --json`.
    pub fn nodes_view(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&admin(&self.coordinator, &["--json", "nodes"]).unwrap()).unwrap()
    }

    /// Waits until every node's entry in `cairn admin nodes` satisfies `check`.
    pub fn wait_nodes(&self, check: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let view = self.nodes_view();
            let ready = self.nodes.iter().all(|node| {
                let id = node.id.to_string();
                view.iter().any(|v| v["id"] == id.as_str() && check(v))
            });
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "nodes never got ready: {view:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A coordinator client under a fresh gateway key of the test's own, registered (to
    /// ask the catalog what a gateway may). Call inside a tokio runtime.
    pub fn gateway_client(&self) -> cairn_client::coordinator::CoordinatorClient {
        let me = SecretKey::generate();
        self.register_gateway(&me.public());
        let endpoint =
            cairn_proto::transport::client_endpoint("127.0.0.1:0".parse().unwrap(), &me).unwrap();
        cairn_client::coordinator::CoordinatorClient::new(
            endpoint,
            me,
            self.key,
            vec![self.coordinator.quic.to_string()],
        )
    }

    /// The catalog's record of `bucket`/`key` as a gateway sees it, `None` if there is no
    /// such object. Call outside any tokio runtime.
    pub fn object(&self, bucket: &str, key: &str) -> Option<ObjectRecord> {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let request = GatewayRequest::Object {
                bucket: bucket.into(),
                key: key.into(),
            };
            match self.gateway_client().call(&request).await.unwrap() {
                GatewayResponse::Object(record) => record.map(|record| *record),
                other => panic!("unexpected answer {other:?}"),
            }
        })
    }

    /// Registers `key` as a gateway.
    pub fn register_gateway(&self, key: &PublicKey) {
        admin(
            &self.coordinator,
            &["gateway", "add", &key.to_string(), "--name", "test"],
        )
        .unwrap();
    }
}

/// A `cairn gateway` child process.
pub struct GatewayProcess {
    pub child: std::process::Child,
    pub key: PublicKey,
    pub endpoint: String,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GatewayProcess {
    /// Starts `cairn gateway` with its key in `dir`, on a free loopback port, against the
    /// coordinator members at `coordinators` (one `--coordinator` flag each) that prove
    /// `key`; returns once it serves S3. The key is not registered: that is the caller's
    /// `cairn admin gateway add`.
    pub fn start(
        dir: &std::path::Path,
        coordinators: &[std::net::SocketAddr],
        key: &PublicKey,
    ) -> GatewayProcess {
        Self::start_with(dir, coordinators, key, &[])
    }

    /// [`GatewayProcess::start`] with extra `cairn gateway` flags.
    pub fn start_with(
        dir: &std::path::Path,
        coordinators: &[std::net::SocketAddr],
        key: &PublicKey,
        flags: &[&str],
    ) -> GatewayProcess {
        use std::io::BufRead;
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"));
        command
            .arg("gateway")
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"]);
        for addr in coordinators {
            command.args(["--coordinator", &addr.to_string()]);
        }
        let mut child = command
            .args(["--coordinator-key", &key.to_string()])
            .args(flags)
            .env("CAIRN_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut key = None;
        let endpoint = loop {
            let line = lines.next().expect("gateway exited early").unwrap();
            if let Some(k) = line.strip_prefix("gateway key: ") {
                key = Some(k.parse().unwrap());
            }
            if let Some(url) = line.strip_prefix("S3 on ") {
                break url.to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        GatewayProcess {
            child,
            key: key.expect("gateway printed its key"),
            endpoint,
        }
    }
}

impl TestCluster {
    /// Starts a gateway against this cluster's coordinator and registers its key.
    pub fn start_gateway(&self) -> GatewayProcess {
        self.start_gateway_with(&[])
    }

    /// [`TestCluster::start_gateway`] with extra `cairn gateway` flags.
    pub fn start_gateway_with(&self, flags: &[&str]) -> GatewayProcess {
        let gateway = GatewayProcess::start_with(
            &self.root.path().join("gateway"),
            &[self.coordinator.quic],
            &self.key,
            flags,
        );
        self.register_gateway(&gateway.key);
        gateway
    }

    /// A new S3 access key: (id, secret).
    pub fn access_key(&self) -> (String, String) {
        let out = admin(
            &self.coordinator,
            &["--json", "key", "create", "--name", "test"],
        )
        .unwrap();
        let key: serde_json::Value = serde_json::from_str(&out).unwrap();
        (
            key["id"].as_str().unwrap().to_string(),
            key["secret"].as_str().unwrap().to_string(),
        )
    }
}
