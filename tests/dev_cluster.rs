//! `cairn dev` as a newcomer would use it: the whole cluster in one process (six nodes,
//! 4+2 coding) answers S3 with the credentials it prints. The aws cli, boto3, rclone and
//! s3cmd each upload a small object (under 4 KiB: kept inline in the catalog, no shard is
//! written) and a larger one (megabytes: erasure-coded shards on the nodes; multipart for
//! the aws cli and rclone). The public bucket serves them anonymously and `cairn admin`
//! works with the token it was given. After a `kill -9` and a second start on the same
//! folder, it prints the same credentials, every object reads back byte-exact through the
//! client that wrote it, listings hold exactly what was written, and new writes work.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use support::bytes;
use support::ports::free_ports;
use support::s3clients::{aws, boto3, rclone, run, s3cmd, s3cmd_config};

const TOKEN: &str = "dev-test-admin-token-0123456789";
/// `cairn dev`'s defaults: six nodes, 4+2.
const NODES: u16 = 6;
const K: usize = 4;
const M: usize = 2;

struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cairn dev` with its S3 API on `base` (admin API `base + 1`, coordinator and nodes
/// on the ports after) and returns it with the endpoint and key it printed, once it printed
/// the line that says it is ready.
fn start(dir: &Path, base: u16) -> (Dev, String, (String, String)) {
    let (s3, admin) = (
        format!("127.0.0.1:{base}"),
        format!("127.0.0.1:{}", base + 1),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["dev", "--nodes", &NODES.to_string()])
        .args(["--k", &K.to_string(), "--m", &M.to_string()])
        .args(["--s3-listen", &s3, "--admin-listen", &admin])
        .arg("--data")
        .arg(dir)
        .env("CAIRN_LOG", "warn")
        .env("CAIRN_ADMIN_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut endpoint, mut id, mut secret) = (String::new(), String::new(), String::new());
    loop {
        let line = lines
            .next()
            .expect("cairn dev exited before it was ready (its stderr is above)")
            .unwrap();
        let field = |name: &str| line.strip_prefix(name).map(|v| v.trim().to_string());
        if let Some(v) = field("S3 endpoint:") {
            endpoint = v;
        } else if let Some(v) = field("access key id:") {
            id = v;
        } else if let Some(v) = field("secret access key:") {
            secret = v;
        } else if line.starts_with("Ctrl-C") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    assert!(
        !endpoint.is_empty() && !id.is_empty() && !secret.is_empty(),
        "cairn dev did not print an endpoint and a key"
    );
    (Dev(child), endpoint, (id, secret))
}

fn curl(url: &str) -> Vec<u8> {
    let out = Command::new("curl").args(["-sSf", url]).output().unwrap();
    assert!(
        out.status.success(),
        "anonymous curl {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Shard files on all of the dev cluster's nodes.
fn shard_files(dir: &Path) -> usize {
    (0..NODES)
        .map(|i| {
            let shards = dir.join(format!("node-{i}")).join("shards");
            std::fs::read_dir(&shards)
                .unwrap_or_else(|err| panic!("{}: {err}", shards.display()))
                .flatten()
                .filter(|e| e.file_name() != "tmp" && e.path().is_dir())
                .map(|e| std::fs::read_dir(e.path()).unwrap().count())
                .sum::<usize>()
        })
        .sum()
}

/// One object a client wrote: its key in bucket `cache` and its bytes (also in `file`).
struct Object {
    client: &'static str,
    key: String,
    data: Vec<u8>,
    file: PathBuf,
}

fn assert_same(object: &Object, back: &Path, how: &str) {
    let got = std::fs::read(back).unwrap_or_else(|err| panic!("{}: {err}", back.display()));
    assert!(
        got == object.data,
        "{} read back through {how} differs: {} bytes, expected {}{}",
        object.key,
        got.len(),
        object.data.len(),
        got.iter()
            .zip(&object.data)
            .position(|(a, b)| a != b)
            .map(|at| format!(", first difference at byte {at}"))
            .unwrap_or_default()
    );
}

#[test]
fn dev_cluster_serves_real_clients_and_survives_kill_9() {
    let started = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cairn-dev");
    // S3, admin, the coordinator's QUIC port and one port per node.
    let base = free_ports(3 + NODES);
    let (mut dev, endpoint, key) = start(&dir, base);
    println!(
        "cairn dev ready at {endpoint} after {:?}",
        started.elapsed()
    );

    // Each client's small and large object; sizes are all different so a mix-up shows.
    let sizes: [(&str, usize, usize); 4] = [
        // 9 MiB: the aws cli goes multipart above 8 MiB (two parts).
        ("aws", 1_000, (9 << 20) + 12_345),
        ("boto3", 2_500, (3 << 20) + 1),
        // 12 MiB in 5 MiB chunks: three parts.
        ("rclone", 4_000, 12 << 20),
        ("s3cmd", 77, (5 << 20) + 7),
    ];
    let mut objects = Vec::new();
    for (n, (client, small, large)) in sizes.into_iter().enumerate() {
        for (name, len) in [("small", small), ("large", large)] {
            let key = format!("{client}/{name}.bin");
            let file = root.path().join(format!("{client}-{name}.bin"));
            let data = bytes(len, 100 + n as u64 * 2 + (name == "large") as u64);
            std::fs::write(&file, &data).unwrap();
            objects.push(Object {
                client,
                key,
                data,
                file,
            });
        }
    }
    let s3cfg = s3cmd_config(root.path(), &endpoint, &key);
    let upload = |object: &Object| {
        let file = object.file.to_str().unwrap();
        let url = format!("s3://cache/{}", object.key);
        let remote = format!("cairn:cache/{}", object.key);
        let up = Instant::now();
        match object.client {
            "aws" => run(&mut aws(&endpoint, &key, &["s3", "cp", file, &url])),
            "boto3" => run(&mut boto3(
                &endpoint,
                &key,
                "put",
                "cache",
                &object.key,
                &object.file,
            )),
            "rclone" => run(&mut rclone(
                &endpoint,
                &key,
                &[
                    "copyto",
                    "--s3-upload-cutoff",
                    "5M",
                    "--s3-chunk-size",
                    "5M",
                    file,
                    &remote,
                ],
            )),
            "s3cmd" => run(&mut s3cmd(&s3cfg, &["put", file, &url])),
            other => unreachable!("{other}"),
        };
        println!(
            "{} put {} ({} bytes) in {:?}",
            object.client,
            object.key,
            object.data.len(),
            up.elapsed()
        );
    };
    let download = |object: &Object, to: &Path| {
        let file = to.to_str().unwrap();
        let url = format!("s3://cache/{}", object.key);
        let remote = format!("cairn:cache/{}", object.key);
        match object.client {
            "aws" => run(&mut aws(&endpoint, &key, &["s3", "cp", &url, file])),
            "boto3" => run(&mut boto3(&endpoint, &key, "get", "cache", &object.key, to)),
            "rclone" => run(&mut rclone(&endpoint, &key, &["copyto", &remote, file])),
            "s3cmd" => run(&mut s3cmd(&s3cfg, &["get", "--force", &url, file])),
            other => unreachable!("{other}"),
        };
    };

    // Small objects first: they live in the catalog, so no node holds a shard yet.
    for object in objects.iter().filter(|o| o.key.ends_with("small.bin")) {
        upload(object);
    }
    assert_eq!(
        shard_files(&dir),
        0,
        "objects under 4 KiB should be stored inline, not as shards"
    );
    // Large ones go to the nodes: one 64 MiB segment per part, k + m shards per segment.
    for object in objects.iter().filter(|o| o.key.ends_with("large.bin")) {
        upload(object);
    }
    let segments = 2 + 1 + 3 + 1;
    let shards = shard_files(&dir);
    assert!(
        shards >= segments * (K + M),
        "expected at least {} shards on the nodes for {segments} segments, found {shards}",
        segments * (K + M)
    );
    let head = run(&mut aws(
        &endpoint,
        &key,
        &[
            "s3api",
            "head-object",
            "--bucket",
            "cache",
            "--key",
            "aws/large.bin",
        ],
    ));
    assert!(
        head.contains("-2\\\""),
        "two-part multipart ETag expected: {head}"
    );
    let head = run(&mut aws(
        &endpoint,
        &key,
        &[
            "s3api",
            "head-object",
            "--bucket",
            "cache",
            "--key",
            "rclone/large.bin",
        ],
    ));
    assert!(
        head.contains("-3\\\""),
        "three-part multipart ETag expected: {head}"
    );

    // The bucket `cairn dev` made is public: anyone reads it without a key.
    for object in &objects {
        let got = curl(&format!("{endpoint}/cache/{}", object.key));
        assert!(
            got == object.data,
            "anonymous GET of {} differs ({} bytes, expected {})",
            object.key,
            got.len(),
            object.data.len()
        );
    }

    // `cairn admin` works against it with the token it was given.
    let admin = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "admin",
            "--endpoint",
            &format!("http://127.0.0.1:{}", base + 1),
        ])
        .args(["bucket", "create", "more", "--public-read"])
        .env("CAIRN_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        admin.status.success(),
        "cairn admin bucket create failed: {}",
        String::from_utf8_lossy(&admin.stderr)
    );
    println!("all written and checked after {:?}", started.elapsed());

    // kill -9: no shutdown, no flush. A second start on the same folder resumes.
    dev.0.kill().unwrap();
    dev.0.wait().unwrap();
    drop(dev);
    let restarted = Instant::now();
    let (_dev, endpoint2, key2) = start(&dir, base);
    println!("restarted in {:?}", restarted.elapsed());
    assert_eq!(
        (endpoint2.as_str(), &key2),
        (endpoint.as_str(), &key),
        "a restart must give the same endpoint and credentials"
    );

    // Everything reads back byte-exact, each object through the client that wrote it.
    for object in &objects {
        let back = root
            .path()
            .join(format!("back-{}", object.key.replace('/', "-")));
        download(object, &back);
        assert_same(object, &back, object.client);
    }
    assert!(curl(&format!("{endpoint}/cache/aws/large.bin")) == objects[1].data);

    // Listings hold exactly what was written, in key order, with the right sizes.
    let mut expected: Vec<String> = objects
        .iter()
        .map(|o| format!("{} {}", o.key, o.data.len()))
        .collect();
    expected.sort();
    let listed = run(&mut boto3(
        &endpoint,
        &key,
        "list",
        "cache",
        "",
        Path::new("-"),
    ));
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        expected,
        "boto3 listing"
    );
    let listed = run(&mut aws(
        &endpoint,
        &key,
        &[
            "s3api",
            "list-objects-v2",
            "--bucket",
            "cache",
            "--query",
            "Contents[].[Key, Size]",
            "--output",
            "text",
        ],
    ));
    let listed: Vec<String> = listed
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(listed, expected, "aws cli listing");
    let listed = run(&mut rclone(
        &endpoint,
        &key,
        &["lsf", "-R", "--files-only", "--format", "ps", "cairn:cache"],
    ));
    let listed: Vec<String> = listed.lines().map(|l| l.replacen(';', " ", 1)).collect();
    assert_eq!(listed, expected, "rclone listing");
    let listed = run(&mut s3cmd(&s3cfg, &["ls", "--recursive", "s3://cache"]));
    // `DATE TIME SIZE s3://cache/KEY`
    let listed: Vec<String> = listed
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let key = fields[3].strip_prefix("s3://cache/").unwrap_or(fields[3]);
            format!("{key} {}", fields[2])
        })
        .collect();
    assert_eq!(listed, expected, "s3cmd listing");
    let buckets = run(&mut aws(&endpoint, &key, &["s3", "ls"]));
    assert!(
        buckets.contains(" cache") && buckets.contains(" more"),
        "buckets after restart: {buckets}"
    );

    // The restarted cluster takes new data too (placement and nodes are back).
    let after = Object {
        client: "boto3",
        key: "after-restart.bin".into(),
        data: bytes((2 << 20) + 3, 999),
        file: root.path().join("after.bin"),
    };
    std::fs::write(&after.file, &after.data).unwrap();
    upload(&after);
    let back = root.path().join("after-back.bin");
    download(&after, &back);
    assert_same(&after, &back, "boto3");
    println!("done after {:?}", started.elapsed());
}

/// A node that comes back on another address is found there: `cairn dev` started again on
/// the same folder with other ports moves every node, whose signed heartbeats report the
/// new address; the leader reaches each node there, records it, and every erasure-coded
/// object reads back byte-exact.
#[test]
fn nodes_that_come_back_on_other_addresses_are_found_again() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cairn-dev");
    let first = free_ports(3 + NODES);
    let (dev, endpoint, key) = start(&dir, first);
    let data = bytes((3 << 20) + 4321, 61);
    let file = root.path().join("moved.bin");
    std::fs::write(&file, &data).unwrap();
    run(&mut aws(
        &endpoint,
        &key,
        &["s3", "cp", file.to_str().unwrap(), "s3://cache/moved.bin"],
    ));
    assert!(shard_files(&dir) > 0, "the object was not erasure-coded");
    drop(dev);

    let second = loop {
        let base = free_ports(3 + NODES);
        if base.abs_diff(first) > 3 + NODES {
            break base;
        }
    };
    let (_dev, endpoint, _) = start(&dir, second);
    let got = curl(&format!("{endpoint}/cache/moved.bin"));
    assert!(
        got == data,
        "read back {} bytes after the move, wrote {}",
        got.len(),
        data.len()
    );
}
