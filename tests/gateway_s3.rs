//! `cairn gateway` in front of a real coordinator and nodes, driven by real S3 clients:
//! boto3 and curl (tests/s3/boto3_suite.py), the aws cli, s3cmd and rclone; a corrupted
//! shard is read around and its node reported; nix-cache buckets take only what Nix signed
//! and named; a gateway killed mid-upload leaves nothing visible.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_proto::identity::NodeId;
use support::cluster::TestCluster;
use support::coordinator::admin;
use support::s3clients::{aws, rclone, run, s3cmd, s3cmd_config};

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 131 + i / 4093) as u8).collect()
}

#[test]
fn real_s3_clients_work_against_the_gateway() {
    let cluster = TestCluster::start(&["org-a", "org-b", "org-c"]);
    for (name, extra) in [("cache", &[][..]), ("public", &["--public-read"][..])] {
        let mut args = vec![
            "bucket",
            "create",
            name,
            "--k",
            "2",
            "--m",
            "1",
            "--segment-size",
            "1MiB",
        ];
        args.extend_from_slice(extra);
        admin(&cluster.coordinator, &args).unwrap();
    }
    let gateway = cluster.start_gateway();
    let key = cluster.access_key();

    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3/boto3_suite.py");
    let out = run(Command::new("python3")
        .arg(&suite)
        .env("CAIRN_S3_ENDPOINT", &gateway.endpoint)
        .env("CAIRN_S3_KEY", &key.0)
        .env("CAIRN_S3_SECRET", &key.1)
        .env("CAIRN_S3_BUCKET", "cache")
        .env("CAIRN_S3_PUBLIC_BUCKET", "public"));
    assert!(out.contains("boto3 suite passed"), "{out}");

    // The aws cli: a 40 MiB file goes up in multipart (8 MiB parts) and comes back exact.
    let dir = cluster.root.path();
    let data = pattern(40 << 20);
    std::fs::write(dir.join("big.bin"), &data).unwrap();
    let up = dir.join("big.bin");
    run(&mut aws(
        &gateway.endpoint,
        &key,
        &["s3", "cp", up.to_str().unwrap(), "s3://cache/big.bin"],
    ));
    let down = dir.join("back.bin");
    run(&mut aws(
        &gateway.endpoint,
        &key,
        &["s3", "cp", "s3://cache/big.bin", down.to_str().unwrap()],
    ));
    assert!(
        std::fs::read(&down).unwrap() == data,
        "40 MiB round trip differs"
    );
    let head = run(&mut aws(
        &gateway.endpoint,
        &key,
        &[
            "s3api",
            "head-object",
            "--bucket",
            "cache",
            "--key",
            "big.bin",
        ],
    ));
    assert!(head.contains("-5\\\""), "multipart ETag expected: {head}");
    let listing = run(&mut aws(
        &gateway.endpoint,
        &key,
        &["s3", "ls", "s3://cache/"],
    ));
    assert!(listing.contains("big.bin"), "{listing}");

    // Corrupt one stored shard of the object: GET still returns the exact bytes, and the
    // node that served the bad bytes is reported to the coordinator.
    let (corrupted, shard) = first_data_shard(&cluster, "cache", "big.bin");
    let node = cluster.nodes.iter().find(|n| n.id == corrupted).unwrap();
    let file = node
        .shard_files()
        .into_iter()
        .find(|f| f.file_name().unwrap().to_string_lossy() == shard)
        .expect("the shard's file on its node");
    let mut bytes = std::fs::read(&file).unwrap();
    for b in &mut bytes[1000..1100] {
        *b ^= 0x5a;
    }
    std::fs::write(&file, &bytes).unwrap();
    let out = dir.join("check.bin");
    run(&mut aws(
        &gateway.endpoint,
        &key,
        &["s3", "cp", "s3://cache/big.bin", out.to_str().unwrap()],
    ));
    assert!(
        std::fs::read(&out).unwrap() == data,
        "read around a corrupt shard differs"
    );
    let corrupted = corrupted.to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let nodes = cluster.nodes_view();
        let bad = nodes
            .iter()
            .find(|n| n["id"] == corrupted.as_str())
            .and_then(|n| n["bad_reads"].as_u64())
            .unwrap_or(0);
        if bad > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the corrupt node was never reported: {nodes:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = ureq_get(&format!("{}/metrics", gateway.endpoint));
    assert!(
        !metrics.contains("cairn_gateway_verification_failures_total 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("cairn_gateway_degraded_reads_total 0"),
        "{metrics}"
    );
    // The upload's segment buffers were kept for the next one.
    let idle: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cairn_gateway_segment_buffers_idle_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the idle segment buffer gauge");
    assert!(idle >= 1 << 20, "{metrics}");
    assert!(
        metrics.contains("operation=\"PutObject\"")
            && metrics.contains("operation=\"GetObject\"")
            && metrics.contains("operation=\"CompleteMultipartUpload\""),
        "{metrics}"
    );
}

/// The node and file name of the first data shard of an object, asked of the coordinator
/// with a gateway key of the test's own.
fn first_data_shard(cluster: &TestCluster, bucket: &str, key: &str) -> (NodeId, String) {
    let object = cluster
        .object(bucket, key)
        .unwrap_or_else(|| panic!("{key} not found"));
    let shard = object.body.shards().next().expect("a segmented object");
    (shard.node, shard.id.to_hex())
}

fn ureq_get(url: &str) -> String {
    let out = Command::new("curl").args(["-sf", url]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn nix_cache_buckets_take_only_what_nix_signed_and_named() {
    let cluster = TestCluster::start(&["org-a", "org-b", "org-c"]);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("s3-api/tests/fixtures/nix");
    let trusted = std::fs::read_to_string(fixtures.join("test-cache-1.public")).unwrap();
    admin(
        &cluster.coordinator,
        &[
            "bucket",
            "create",
            "nix",
            "--nix-cache",
            "--trusted-key",
            trusted.trim(),
            "--k",
            "2",
            "--m",
            "1",
        ],
    )
    .unwrap();
    let gateway = cluster.start_gateway();
    let key = cluster.access_key();

    // A binary cache as `nix copy --to file://` wrote it, uploaded as is: all accepted.
    let cache = fixtures.join("cache-xz");
    run(&mut aws(
        &gateway.endpoint,
        &key,
        &["s3", "sync", cache.to_str().unwrap(), "s3://nix/"],
    ));
    let listing = run(&mut aws(
        &gateway.endpoint,
        &key,
        &["s3", "ls", "--recursive", "s3://nix/"],
    ));
    let narinfos = std::fs::read_dir(&cache)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "narinfo")
        })
        .count();
    assert_eq!(listing.matches(".narinfo").count(), narinfos, "{listing}");
    assert!(listing.contains(".nar.xz"), "{listing}");

    let refused = |file: &Path, target: &str| -> String {
        let out = aws(
            &gateway.endpoint,
            &key,
            &[
                "s3",
                "cp",
                file.to_str().unwrap(),
                &format!("s3://nix/{target}"),
            ],
        )
        .output()
        .unwrap();
        assert!(!out.status.success(), "{target} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let dir = cluster.root.path();
    let (name, text) = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "narinfo"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .unwrap();
    // A narinfo whose signed fields were changed.
    let tampered = dir.join("tampered.narinfo");
    let size_line = text.lines().find(|l| l.starts_with("NarSize: ")).unwrap();
    std::fs::write(&tampered, text.replace(size_line, "NarSize: 1")).unwrap();
    let err = refused(&tampered, &name);
    assert!(
        err.contains("AccessDenied") && err.contains("does not verify"),
        "{err}"
    );
    // Without any signature.
    let unsigned = dir.join("unsigned.narinfo");
    let kept: Vec<&str> = text.lines().filter(|l| !l.starts_with("Sig: ")).collect();
    std::fs::write(&unsigned, kept.join("\n") + "\n").unwrap();
    let err = refused(&unsigned, &name);
    assert!(err.contains("AccessDenied"), "{err}");
    // A NAR under a name that is not its hash.
    let nar = std::fs::read_dir(cache.join("nar"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let wrong = "nar/0000000000000000000000000000000000000000000000000000.nar.xz";
    let err = refused(&nar, wrong);
    assert!(err.contains("AccessDenied"), "{err}");
    let listing = run(&mut aws(
        &gateway.endpoint,
        &key,
        &["s3", "ls", "--recursive", "s3://nix/"],
    ));
    assert!(!listing.contains("000000000000"), "{listing}");
}

#[test]
fn a_gateway_killed_mid_upload_leaves_nothing_visible() {
    let cluster = TestCluster::start(&["org-a", "org-b", "org-c"]);
    admin(
        &cluster.coordinator,
        &[
            "bucket",
            "create",
            "cache",
            "--k",
            "2",
            "--m",
            "1",
            "--segment-size",
            "1MiB",
        ],
    )
    .unwrap();
    let mut gateway = cluster.start_gateway();
    let key = cluster.access_key();
    // A presigned PUT of 8 MiB of which only 3 MiB are sent before the gateway dies: by
    // then whole segments have reached the nodes, but nothing is committed.
    let script = r#"
import os, socket, sys, time, urllib.parse, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["E"], aws_access_key_id=os.environ["K"],
    aws_secret_access_key=os.environ["S"], region_name="us-east-1",
    config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
url = urllib.parse.urlsplit(s3.generate_presigned_url("put_object",
    Params={"Bucket": "cache", "Key": "half"}, ExpiresIn=300))
sock = socket.create_connection((url.hostname, url.port))
sock.sendall(f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Length: {8 << 20}\r\n\r\n".encode())
sock.sendall(b"x" * (3 << 20))
print("sent", flush=True)
time.sleep(60)
"#;
    let mut sender = Command::new("python3")
        .args(["-c", script])
        .env("E", &gateway.endpoint)
        .env("K", &key.0)
        .env("S", &key.1)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(sender.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "sent");
    // Let the gateway take in what was sent (segments go out as they fill).
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster
        .nodes_view()
        .iter()
        .all(|n| n["shards"].as_u64() == Some(0))
    {
        assert!(Instant::now() < deadline, "no shard ever reached a node");
        std::thread::sleep(Duration::from_millis(50));
    }
    gateway.child.kill().unwrap();
    gateway.child.wait().unwrap();
    let _ = sender.kill();
    let _ = sender.wait();
    drop(gateway);

    let gateway = cluster.start_gateway();
    let out = aws(
        &gateway.endpoint,
        &key,
        &["s3api", "head-object", "--bucket", "cache", "--key", "half"],
    )
    .output()
    .unwrap();
    assert!(!out.status.success(), "a half-sent object is visible");
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    let listing = run(&mut aws(
        &gateway.endpoint,
        &key,
        &["s3", "ls", "s3://cache/"],
    ));
    assert!(listing.trim().is_empty(), "{listing}");
}

#[test]
fn rclone_and_s3cmd_round_trip_through_the_gateway() {
    let cluster = TestCluster::start(&["org-a", "org-b", "org-c"]);
    admin(
        &cluster.coordinator,
        &[
            "bucket",
            "create",
            "tools",
            "--k",
            "2",
            "--m",
            "1",
            "--segment-size",
            "1MiB",
        ],
    )
    .unwrap();
    let gateway = cluster.start_gateway();
    let key = cluster.access_key();
    let dir = cluster.root.path();
    let small = pattern(300_000);
    let large = pattern(12 << 20);
    std::fs::write(dir.join("small.bin"), &small).unwrap();
    std::fs::write(dir.join("large.bin"), &large).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();

    // s3cmd, with a config file of its own (it reads no environment).
    let config = s3cmd_config(dir, &gateway.endpoint, &key);
    let s3cmd = |args: &[&str]| run(&mut s3cmd(&config, args));
    s3cmd(&["put", &path("small.bin"), "s3://tools/s3cmd/small.bin"]);
    s3cmd(&[
        "put",
        "--multipart-chunk-size-mb=5",
        &path("large.bin"),
        "s3://tools/s3cmd/large.bin",
    ]);
    s3cmd(&[
        "get",
        "--force",
        "s3://tools/s3cmd/large.bin",
        &path("s3cmd-back.bin"),
    ]);
    assert!(std::fs::read(dir.join("s3cmd-back.bin")).unwrap() == large);
    let listing = s3cmd(&["ls", "s3://tools/s3cmd/"]);
    assert!(
        listing.contains("small.bin") && listing.contains("large.bin"),
        "{listing}"
    );
    s3cmd(&["del", "s3://tools/s3cmd/small.bin"]);
    assert!(!s3cmd(&["ls", "s3://tools/s3cmd/"]).contains("small.bin"));

    // rclone, configured through the environment; multipart in 5 MiB chunks.
    let rclone = |args: &[&str]| run(&mut rclone(&gateway.endpoint, &key, args));
    rclone(&["copyto", &path("small.bin"), "cairn:tools/rclone/small.bin"]);
    rclone(&[
        "copyto",
        "--s3-upload-cutoff",
        "5M",
        "--s3-chunk-size",
        "5M",
        &path("large.bin"),
        "cairn:tools/rclone/large.bin",
    ]);
    rclone(&[
        "copyto",
        "cairn:tools/rclone/large.bin",
        &path("rclone-back.bin"),
    ]);
    assert!(std::fs::read(dir.join("rclone-back.bin")).unwrap() == large);
    rclone(&[
        "copyto",
        "cairn:tools/rclone/small.bin",
        &path("rclone-small.bin"),
    ]);
    assert!(std::fs::read(dir.join("rclone-small.bin")).unwrap() == small);
    let listing = rclone(&["ls", "cairn:tools"]);
    assert!(
        listing.contains("rclone/large.bin") && listing.contains("s3cmd/large.bin"),
        "{listing}"
    );
    rclone(&["deletefile", "cairn:tools/rclone/small.bin"]);
    assert!(!rclone(&["ls", "cairn:tools"]).contains("rclone/small.bin"));
}
