//! Shared by the tests that break a filled cluster and watch it heal: a cluster with
//! short timers filled with objects of mixed sizes (tests/s3/objects.py), and what the
//! coordinator says about their durability and placement.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_client::gateway_rpc::{GatewayRequest, GatewayResponse};
use cairn_client::records::ObjectBody;
use cairn_proto::identity::NodeId;

use super::cluster::{GatewayProcess, TestCluster};
use super::coordinator::admin;

/// The bucket the objects live in.
pub const BUCKET: &str = "heal";

/// Runs tests/s3/objects.py (`put`, `check`) against the gateway, on the objects under
/// `mixed/`.
pub fn objects(mode: &str, endpoint: &str, key: &(String, String)) -> Result<(), String> {
    objects_at(mode, endpoint, key, "mixed/")
}

/// Runs tests/s3/objects.py on the objects under `prefix`.
pub fn objects_at(
    mode: &str,
    endpoint: &str,
    key: &(String, String),
    prefix: &str,
) -> Result<(), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3/objects.py");
    let out = Command::new("python3")
        .arg(script)
        .args([mode, BUCKET, prefix])
        .env("CAIRN_S3_ENDPOINT", endpoint)
        .env("CAIRN_S3_KEY", &key.0)
        .env("CAIRN_S3_SECRET", &key.1)
        .output()
        .map_err(|err| err.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The durability part of `cairn admin status --json`, once the leader has surveyed.
pub fn durability(cluster: &TestCluster) -> Option<serde_json::Value> {
    let status = admin(&cluster.coordinator, &["--json", "status"]).ok()?;
    let status: serde_json::Value = serde_json::from_str(&status).ok()?;
    Some(status["durability"].clone()).filter(|d| !d.is_null())
}

/// Segments per margin, from the status.
pub fn margins(durability: &serde_json::Value) -> BTreeMap<i64, u64> {
    durability["segments_by_margin"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.parse().unwrap(), v.as_u64().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

/// Every node that holds a shard of an object in the bucket, per object, asked of the
/// coordinator with a gateway key of the test's own.
pub fn shard_nodes(cluster: &TestCluster) -> Vec<(String, Vec<Vec<NodeId>>)> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = cluster.gateway_client();
        let request = GatewayRequest::List {
            bucket: BUCKET.into(),
            query: cairn_client::records::ListQuery {
                max: 1000,
                ..Default::default()
            },
        };
        let GatewayResponse::Listing(listing) = client.call(&request).await.unwrap() else {
            panic!("no listing");
        };
        listing
            .objects
            .into_iter()
            .map(|(key, object)| {
                let segments = match object.body {
                    ObjectBody::Inline(_) => Vec::new(),
                    ObjectBody::Segments { segments, .. } => segments
                        .iter()
                        .map(|s| s.shards.iter().map(|shard| shard.node).collect())
                        .collect(),
                };
                (key, segments)
            })
            .collect()
    })
}

/// Polls `check` for up to a minute.
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the survey shows every segment at full margin (2), and returns how many
/// segments there are.
pub fn full_margin(cluster: &TestCluster) -> u64 {
    let mut total = 0;
    wait_until("every segment at full margin", || {
        let Some(d) = durability(cluster) else {
            return false;
        };
        let m = margins(&d);
        total = m.get(&2).copied().unwrap_or(0);
        m.len() == 1 && total > 0 && d["repair_queue"] == 0
    });
    total
}

/// A cluster of 8 nodes in 4 organisations with short timers, a gateway, an access key and
/// the 4 + 2 bucket, filled with the objects under `mixed/`.
pub fn filled_cluster() -> (TestCluster, GatewayProcess, (String, String)) {
    filled_cluster_of(&["a", "a", "b", "b", "c", "c", "d", "d"], &[])
}

/// Like [`filled_cluster`], with nodes in `orgs` and extra coordinator flags.
pub fn filled_cluster_of(
    orgs: &[&str],
    flags: &[&str],
) -> (TestCluster, GatewayProcess, (String, String)) {
    let cluster = fast_cluster(orgs, flags);
    let (gateway, key) = fill(&cluster);
    (cluster, gateway, key)
}

/// A cluster with nodes in `orgs` and timers short enough to watch failure, repair and
/// collection, nothing stored yet. `flags` (name, value pairs) are added to the
/// coordinator's, or replace these defaults of the same name.
pub fn fast_cluster(orgs: &[&str], flags: &[&str]) -> TestCluster {
    let defaults = [
        ("--suspect-after-secs", "1"),
        ("--lost-after-secs", "3"),
        ("--repair-interval-ms", "300"),
        ("--gc-interval-ms", "300"),
        ("--gc-delay-secs", "1"),
        ("--orphan-delay-secs", "12"),
    ];
    let mut all: Vec<&str> = defaults
        .iter()
        .filter(|(name, _)| !flags.contains(name))
        .flat_map(|(name, value)| [*name, *value])
        .collect();
    all.extend_from_slice(flags);
    TestCluster::start_with(orgs, &all)
}

/// Starts a gateway, makes an access key and the public 4 + 2 bucket with 1 MiB segments,
/// and uploads (then checks) the objects under `mixed/`.
pub fn fill(cluster: &TestCluster) -> (GatewayProcess, (String, String)) {
    let gateway = cluster.start_gateway();
    let key = cluster.access_key();
    upload(cluster, &gateway, &key);
    (gateway, key)
}

/// Makes the public 4 + 2 bucket with 1 MiB segments and uploads (then checks) the
/// objects under `mixed/` through `gateway` with `key`.
pub fn upload(cluster: &TestCluster, gateway: &GatewayProcess, key: &(String, String)) {
    create_bucket(cluster, "1MiB");
    objects("put", &gateway.endpoint, key).unwrap();
    objects("check", &gateway.endpoint, key).unwrap();
}

/// Makes the public 4 + 2 bucket with segments of `segment_size` (`1MiB`, `128KiB`…):
/// smaller segments make more shards of the same objects.
pub fn create_bucket(cluster: &TestCluster, segment_size: &str) {
    admin(
        &cluster.coordinator,
        &[
            "bucket",
            "create",
            BUCKET,
            "--public-read",
            "--k",
            "4",
            "--m",
            "2",
            "--segment-size",
            segment_size,
        ],
    )
    .unwrap();
}

/// The keys of the objects tests/s3/objects.py writes under `prefix`.
pub fn object_names(prefix: &str) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3/objects.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["names", BUCKET, prefix])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}
