//! `cairn import` and `cairn admin verify` against real third-party tools.
//!
//! A real Nix binary cache made by Debian's Nix (`nix copy --to file://…`, signed, zstd, one
//! NAR large enough for multipart) plus a corrupted NAR, an unsigned narinfo, one signed by a
//! stranger and a malformed one, uploaded with the aws cli to `moto` (a third-party S3
//! server, run by the test). The import into a `cairn dev` nix-cache bucket is `kill -9`ed
//! halfway (after the gateway counted enough successful writes); the second run finishes,
//! writes exactly what was missing (the gateway's own PUT counters), names every bad object
//! with its reason and ends with a failing exit status, and the bucket then equals one
//! filled by a clean import. `nix-store -r` substitutes the closure from the gateway. The
//! gateway's own refusals are reported the same way; `--since` and `--dry-run` pick up and
//! show what was added later; Cairn mirrors back into moto.
//!
//! `cairn admin verify` on a bucket filled from the `file://` cache finds nothing; then a
//! dangling narinfo, an orphan NAR, a wrong FileSize, a narinfo signed only by a key about to
//! be retired and (for `--deep`) a narinfo pointing at another path's NAR are planted, and
//! each run finds exactly the faults it should.
//!
//! Skipped, with a message, where nix, moto or the aws cli are missing; a failure instead
//! when CI is set (`.ci/run` installs them).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::ports::free_ports;

use serde_json::Value;

/// `nix` subcommands are experimental in the Nix versions Debian ships.
const NIX: [&str; 2] = ["--extra-experimental-features", "nix-command"];
const TOKEN: &str = "import-test-admin-token-0123456789";
/// moto accepts any credentials.
const MOTO_KEY: (&str, &str) = ("testing", "testing");

// ---------------------------------------------------------------------------------------
// Tools and processes

/// Whether the tools the test needs are installed; with CI set, their absence fails.
fn have_tools(test: &str, moto: bool) -> bool {
    let runs = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut missing = Vec::new();
    if !runs("nix", "--version") {
        missing.push("nix (Debian: apt-get install nix-bin)");
    }
    if moto && !runs("moto_server", "--help") {
        missing.push("moto_server (pip install 'moto[server]')");
    }
    if moto && !runs("aws", "--version") {
        missing.push("aws (pip install awscli)");
    }
    if missing.is_empty() {
        return true;
    }
    let message = format!("{test}: missing {}", missing.join(", "));
    assert!(std::env::var_os("CI").is_none(), "{message}");
    eprintln!("SKIPPED {message}");
    false
}

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something accepts connections on `port` (the process must stay alive).
fn wait_listening(child: &mut Child, port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status} before it listened");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// moto's S3 server on loopback.
struct Moto {
    _child: Running,
    endpoint: String,
}

fn start_moto() -> Moto {
    let port = free_ports(1);
    let mut child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    wait_listening(&mut child, port, "moto_server");
    Moto {
        _child: Running(child),
        endpoint: format!("http://127.0.0.1:{port}"),
    }
}

/// A `cairn dev` cluster: its S3 endpoint, admin endpoint and access key.
struct Dev {
    _child: Running,
    endpoint: String,
    admin: String,
    key: (String, String),
}

fn start_dev(dir: &Path) -> Dev {
    let base = free_ports(10);
    let admin = format!("127.0.0.1:{}", base + 1);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["dev", "--s3-listen", &format!("127.0.0.1:{base}")])
        .args(["--admin-listen", &admin])
        .arg("--data")
        .arg(dir)
        .env("CAIRN_LOG", "warn")
        .env("CAIRN_ADMIN_TOKEN", TOKEN)
        .env_remove("CAIRN_ACCESS_KEY")
        .env_remove("CAIRN_SECRET_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start cairn dev");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut endpoint, mut id, mut secret) = (String::new(), String::new(), String::new());
    loop {
        let line = lines
            .next()
            .expect("cairn dev exited before it was ready (its stderr is above)")
            .expect("cairn dev's output");
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
    assert!(!endpoint.is_empty() && !id.is_empty() && !secret.is_empty());
    Dev {
        _child: Running(child),
        endpoint,
        admin: format!("http://{admin}"),
        key: (id, secret),
    }
}

/// Runs a command to completion and insists it succeeded.
fn checked(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|err| panic!("{command:?}: {err}"));
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(command: &mut Command) -> String {
    String::from_utf8_lossy(&checked(command).stdout)
        .trim()
        .to_string()
}

/// `cairn admin …` against the dev cluster.
fn admin(dev: &Dev) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
    command
        .args(["admin", "--endpoint", &dev.admin])
        .env("CAIRN_ADMIN_TOKEN", TOKEN)
        .env("CAIRN_LOG", "warn");
    command
}

fn create_nix_bucket(dev: &Dev, name: &str, keys: &[&str]) {
    let mut command = admin(dev);
    command.args(["bucket", "create", name, "--public-read", "--nix-cache"]);
    for key in keys {
        command.args(["--trusted-key", key]);
    }
    checked(&mut command);
}

/// `cairn import` with the destination key in CAIRN_* and the source key in AWS_*.
fn import(dest_endpoint: &str, dest_key: (&str, &str), source_key: (&str, &str)) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
    command
        .args(["import", "--endpoint", dest_endpoint])
        .args(["--progress-interval", "0"])
        .env("CAIRN_LOG", "warn")
        .env("CAIRN_ACCESS_KEY", dest_key.0)
        .env("CAIRN_SECRET_KEY", dest_key.1)
        .env("AWS_ACCESS_KEY_ID", source_key.0)
        .env("AWS_SECRET_ACCESS_KEY", source_key.1)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("CAIRN_SOURCE_ENDPOINT")
        .env_remove("CAIRN_S3_ENDPOINT");
    command
}

/// Runs an import with `--json`; (exit success, summary, stderr).
fn import_json(command: &mut Command) -> (bool, Value, String) {
    let out = command
        .arg("--json")
        .output()
        .unwrap_or_else(|err| panic!("{command:?}: {err}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
        panic!(
            "{command:?} printed no JSON summary ({err}):\n{}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.success(), summary, stderr)
}

fn count(summary: &Value, field: &str) -> u64 {
    summary[field]["objects"]
        .as_u64()
        .unwrap_or_else(|| panic!("summary has no {field}.objects: {summary}"))
}

/// Failures of a summary: key → reason.
fn failures(summary: &Value) -> BTreeMap<String, String> {
    summary["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .map(|f| {
            (
                f["key"].as_str().unwrap_or_default().to_string(),
                f["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The aws cli against `endpoint` with a key.
fn aws(endpoint: &str, key: (&str, &str)) -> Command {
    let mut command = Command::new("aws");
    command
        .args(["--endpoint-url", endpoint])
        .env("AWS_ACCESS_KEY_ID", key.0)
        .env("AWS_SECRET_ACCESS_KEY", key.1)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE");
    command
}

/// A bucket's objects as the aws cli lists them: key → (size, ETag).
fn listing(endpoint: &str, key: (&str, &str), bucket: &str) -> BTreeMap<String, (u64, String)> {
    let text = stdout(aws(endpoint, key).args([
        "s3api",
        "list-objects-v2",
        "--bucket",
        bucket,
        "--output",
        "json",
    ]));
    if text.is_empty() {
        return BTreeMap::new();
    }
    let value: Value = serde_json::from_str(&text).expect("listing JSON");
    value["Contents"]
        .as_array()
        .map(|objects| {
            objects
                .iter()
                .map(|o| {
                    (
                        o["Key"].as_str().unwrap_or_default().to_string(),
                        (
                            o["Size"].as_u64().unwrap_or_default(),
                            o["ETag"]
                                .as_str()
                                .unwrap_or_default()
                                .trim_matches('"')
                                .to_string(),
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Successful object writes the gateway counted (PutObject and CompleteMultipartUpload
/// answered 200), from its Prometheus metrics.
fn writes(endpoint: &str) -> u64 {
    let text = ureq::get(format!("{endpoint}/metrics"))
        .call()
        .expect("gateway metrics")
        .body_mut()
        .read_to_string()
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with("cairn_gateway_requests_total{"))
        .filter(|l| {
            (l.contains("operation=\"PutObject\"")
                || l.contains("operation=\"CompleteMultipartUpload\""))
                && l.contains("status=\"200\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

// ---------------------------------------------------------------------------------------
// Nix

/// A signing key made by `nix key`: (secret file, public key).
fn signing_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let secret =
        stdout(
            Command::new("nix")
                .args(NIX)
                .args(["key", "generate-secret", "--key-name", name]),
        );
    let path = dir.join(format!("{name}.sk"));
    std::fs::write(&path, &secret).expect("write key");
    let public = stdout(
        Command::new("nix")
            .args(NIX)
            .args(["key", "convert-secret-to-public"])
            .stdin(std::fs::File::open(&path).expect("key file")),
    );
    (path, public)
}

/// Pseudo-random bytes (incompressible, so the NAR keeps its size).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) as u8
        })
        .collect()
}

/// Adds files to a store of its own; their store paths, in the same order.
fn add_files(store: &Path, dir: &Path, files: &[(String, Vec<u8>)]) -> Vec<String> {
    std::fs::create_dir_all(dir).expect("files dir");
    let mut command = Command::new("nix-store");
    command.arg("--store").arg(store).arg("--add");
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write file");
        command.arg(path);
    }
    stdout(&mut command).lines().map(str::to_string).collect()
}

/// A store path whose text refers to all of `paths`, so its closure is all of them.
fn top_path(store: &Path, paths: &[String]) -> String {
    let refs: String = paths
        .iter()
        .map(|p| format!("${{builtins.storePath \"{p}\"}} "))
        .collect();
    stdout(
        Command::new("nix-instantiate")
            .arg("--store")
            .arg(store)
            .args(["--eval", "--read-write-mode", "-E"])
            .arg(format!(
                "builtins.toFile \"top.txt\" \"depends on {refs}({})\"",
                std::process::id()
            )),
    )
    .trim_matches('"')
    .to_string()
}

/// `nix copy` of `paths` (with their closures) into a `file://` cache, signed if a key is
/// given.
fn nix_copy(store: &Path, cache: &Path, secret: Option<&Path>, paths: &[&str]) {
    let mut url = format!("file://{}?compression=zstd", cache.display());
    if let Some(secret) = secret {
        url.push_str(&format!("&secret-key={}", secret.display()));
    }
    checked(
        Command::new("nix")
            .args(NIX)
            .arg("copy")
            .arg("--store")
            .arg(store)
            .arg("--to")
            .arg(url)
            .args(paths),
    );
}

fn hash_part(store_path: &str) -> String {
    store_path
        .trim_start_matches("/nix/store/")
        .split('-')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The narinfo of a store path in a cache: (key, text).
fn narinfo(cache: &Path, store_path: &str) -> (String, String) {
    let key = format!("{}.narinfo", hash_part(store_path));
    let text = std::fs::read_to_string(cache.join(&key)).expect("narinfo in the cache");
    (key, text)
}

/// The value of a narinfo field.
fn field<'a>(narinfo: &'a str, name: &str) -> &'a str {
    narinfo
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {narinfo}"))
}

/// Every file under `dir`, as object keys.
fn keys_under(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if let Ok(relative) = path.strip_prefix(root) {
                out.insert(relative.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// Copies a narinfo and its NAR from one cache directory into another.
fn transplant(from: &Path, to: &Path, store_path: &str) {
    let (key, text) = narinfo(from, store_path);
    let nar = field(&text, "URL").to_string();
    std::fs::create_dir_all(to.join("nar")).expect("nar dir");
    std::fs::copy(from.join(&key), to.join(&key)).expect("copy narinfo");
    std::fs::copy(from.join(&nar), to.join(&nar)).expect("copy NAR");
}

// ---------------------------------------------------------------------------------------
// Tests

#[test]
fn import_from_moto_resumes_after_kill_and_substitutes() {
    const TEST: &str = "import_from_moto_resumes_after_kill_and_substitutes";
    if !have_tools(TEST, true) {
        return;
    }
    let root = tempfile::tempdir().expect("temp dir");
    let root = root.path();
    let store = root.join("store");
    let (secret, public) = signing_key(root, "cairn-import-1");
    let (stranger, _) = signing_key(root, "stranger-1");

    // The closure: 60 small files (inline in the catalog), a 300 KiB one (shards) and a
    // 12 MiB one (a multipart upload at the default 8 MiB part size), under one top path.
    let payload = noise(300_000, 1);
    let big = noise(12 << 20, 2);
    let mut files: Vec<(String, Vec<u8>)> = (0..60)
        .map(|i| {
            (
                format!("f{i}.txt"),
                format!("file {i} of the import test ({})\n", std::process::id()).into_bytes(),
            )
        })
        .collect();
    files.push(("payload.bin".into(), payload.clone()));
    files.push(("big.bin".into(), big.clone()));
    let paths = add_files(&store, &root.join("files"), &files);
    let (payload_path, big_path) = (paths[60].clone(), paths[61].clone());
    let top = top_path(&store, &paths);
    let cache = root.join("cache");
    nix_copy(&store, &cache, Some(&secret), &[&top]);

    // The bad ones, outside the closure: a corrupted NAR (its narinfo is fine), an unsigned
    // narinfo, one signed by a key nobody trusts, and one that is not a narinfo at all.
    let extras = add_files(
        &store,
        &root.join("extras"),
        &[
            ("e1.txt".into(), b"corrupted NAR\n".to_vec()),
            ("e2.txt".into(), b"unsigned narinfo\n".to_vec()),
            ("e3.txt".into(), b"stranger's narinfo\n".to_vec()),
        ],
    );
    nix_copy(&store, &cache, Some(&secret), &[&extras[0]]);
    let (e1_narinfo, e1_text) = narinfo(&cache, &extras[0]);
    let e1_nar = field(&e1_text, "URL").to_string();
    let mut corrupted = std::fs::read(cache.join(&e1_nar)).expect("NAR");
    let last = corrupted.len() - 1;
    corrupted[last] ^= 0x55;
    std::fs::write(cache.join(&e1_nar), corrupted).expect("corrupt NAR");
    let unsigned = root.join("unsigned");
    nix_copy(&store, &unsigned, None, &[&extras[1]]);
    transplant(&unsigned, &cache, &extras[1]);
    let strangers = root.join("strangers");
    nix_copy(&store, &strangers, Some(&stranger), &[&extras[2]]);
    transplant(&strangers, &cache, &extras[2]);
    let malformed = "00000000000000000000000000000000.narinfo".to_string();
    std::fs::write(cache.join(&malformed), "StorePath: broken\n").expect("write");

    let bad: BTreeMap<String, &str> = [
        (e1_nar.clone(), "does not match the hash in its name"),
        (e1_narinfo.clone(), "is not in the destination"),
        (narinfo(&cache, &extras[1]).0, "no Sig line"),
        (
            narinfo(&cache, &extras[2]).0,
            "no signature by a trusted key",
        ),
        (malformed.clone(), "malformed"),
    ]
    .into_iter()
    .collect();
    let all = keys_under(&cache);
    let good: BTreeSet<String> = all
        .difference(&bad.keys().cloned().collect())
        .cloned()
        .collect();
    let good_data = good.iter().filter(|k| !k.ends_with(".narinfo")).count() as u64;
    assert!(good.len() > 120, "{} good objects", good.len());

    // The source: moto, filled by the aws cli.
    let moto = start_moto();
    checked(aws(&moto.endpoint, MOTO_KEY).args(["s3", "mb", "s3://source"]));
    checked(aws(&moto.endpoint, MOTO_KEY).args([
        "s3",
        "sync",
        cache.to_str().expect("path"),
        "s3://source",
        "--only-show-errors",
    ]));
    assert_eq!(listing(&moto.endpoint, MOTO_KEY, "source").len(), all.len());

    let dev = start_dev(&root.join("dev"));
    let key = (dev.key.0.as_str(), dev.key.1.as_str());
    for bucket in ["nix", "clean", "unchecked"] {
        create_nix_bucket(&dev, bucket, &[&public]);
    }
    let from_moto = |bucket: &str| {
        let mut command = import(&dev.endpoint, key, MOTO_KEY);
        command
            .args(["--source-endpoint", &moto.endpoint])
            .args(["s3://source", &format!("s3://{bucket}")]);
        command
    };
    let checked_into = |bucket: &str| {
        let mut command = from_moto(bucket);
        command.args(["--nix-cache", "--trusted-key", &public]);
        command
    };

    // First run, one object at a time, killed once the narinfo phase has begun.
    let before = writes(&dev.endpoint);
    let threshold = good_data + 10;
    let mut child = checked_into("nix")
        .args(["--jobs", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the import");
    let deadline = Instant::now() + Duration::from_secs(300);
    while writes(&dev.endpoint) - before < threshold {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the import ended ({status}) before {threshold} writes were seen");
        }
        assert!(Instant::now() < deadline, "the import made no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().expect("SIGKILL the import");
    child.wait().expect("reap the import");
    let first_writes = writes(&dev.endpoint) - before;
    let after_kill = listing(&dev.endpoint, key, "nix");
    let visible = after_kill.len() as u64;
    assert!(
        visible < good.len() as u64,
        "the import finished before it was killed ({visible} objects)"
    );
    // With one job, at most the write in flight at the kill was committed without its 200.
    assert!(
        first_writes == visible || first_writes + 1 == visible,
        "{first_writes} successful writes but {visible} objects after the kill"
    );
    // NARs go first: every narinfo already there has its NAR there.
    let narinfos_there: Vec<&String> = after_kill
        .keys()
        .filter(|k| k.ends_with(".narinfo"))
        .collect();
    assert!(
        !narinfos_there.is_empty(),
        "killed before the narinfo phase"
    );
    for key in narinfos_there {
        let text = std::fs::read_to_string(cache.join(key)).expect("source narinfo");
        let nar = field(&text, "URL");
        assert!(
            after_kill.contains_key(nar),
            "{key} was served before its NAR {nar}"
        );
    }

    // Second run: finishes, writes exactly what was missing, names each bad object.
    let before = writes(&dev.endpoint);
    let (ok, summary, stderr) = import_json(checked_into("nix").args(["--jobs", "4"]));
    let second_writes = writes(&dev.endpoint) - before;
    assert!(!ok, "an import with failures must exit non-zero");
    let failed = failures(&summary);
    assert_eq!(
        failed.keys().collect::<Vec<_>>(),
        bad.keys().collect::<Vec<_>>(),
        "{summary}"
    );
    for (key, reason) in &bad {
        assert!(failed[key].contains(reason), "{key}: {}", failed[key]);
        assert!(stderr.contains(&format!("failed: {key}: ")), "{stderr}");
    }
    assert_eq!(summary["failed"], 5);
    assert_eq!(count(&summary, "present"), visible, "{summary}");
    assert_eq!(count(&summary, "copied"), good.len() as u64 - visible);
    assert_eq!(second_writes, good.len() as u64 - visible, "{summary}");
    assert!(
        first_writes + second_writes <= good.len() as u64,
        "{first_writes} + {second_writes} writes for {} objects: something was copied twice",
        good.len()
    );
    let resumed = listing(&dev.endpoint, key, "nix");
    assert_eq!(resumed.keys().cloned().collect::<BTreeSet<_>>(), good);

    // The same from scratch in one run gives the same bucket, byte for byte (same sizes and
    // MD5 or multipart ETags).
    let (ok, summary, _) = import_json(checked_into("clean").args(["--jobs", "8"]));
    assert!(!ok);
    assert_eq!(count(&summary, "copied"), good.len() as u64);
    assert_eq!(listing(&dev.endpoint, key, "clean"), resumed);

    // Without local checks the gateway refuses the same objects (all but the narinfo of the
    // corrupted NAR, whose signature is good): reported by name, not a crash.
    let (ok, summary, _) = import_json(from_moto("unchecked").args(["--jobs", "4"]));
    assert!(!ok);
    let refused = failures(&summary);
    let expected: Vec<&String> = bad.keys().filter(|k| **k != e1_narinfo).collect();
    assert_eq!(refused.keys().collect::<Vec<_>>(), expected, "{summary}");
    for reason in refused.values() {
        assert!(
            reason.contains("the destination refused it: AccessDenied"),
            "{reason}"
        );
    }

    // Nix substitutes the whole closure from the gateway into an empty store.
    let target = root.join("target-store");
    checked(
        Command::new("nix-store")
            .arg("--store")
            .arg(&target)
            .args(["-r", &top])
            .args(["--option", "substituters"])
            .arg(format!("{}/nix", dev.endpoint))
            .args(["--option", "trusted-public-keys", &public]),
    );
    let read =
        |path: &str| std::fs::read(target.join(path.trim_start_matches('/'))).expect("substituted");
    assert!(
        read(&payload_path) == payload,
        "the substituted payload differs"
    );
    assert!(read(&big_path) == big, "the substituted big file differs");

    // Hydra uploads meanwhile: --since finds the new path by HEAD lookups; --dry-run shows it
    // and writes nothing.
    let newer = add_files(
        &store,
        &root.join("newer"),
        &[("n1.txt".into(), b"late\n".to_vec())],
    );
    let late = root.join("late");
    nix_copy(&store, &late, Some(&secret), &[&newer[0]]);
    // Its NAR and narinfo (the same nix-cache-info is there already).
    for key in keys_under(&late)
        .into_iter()
        .filter(|k| k != "nix-cache-info")
    {
        checked(aws(&moto.endpoint, MOTO_KEY).args([
            "s3",
            "cp",
            late.join(&key).to_str().expect("path"),
            &format!("s3://source/{key}"),
        ]));
    }
    let before = writes(&dev.endpoint);
    let (_, summary, stderr) =
        import_json(checked_into("nix").args(["--since", "1h", "--dry-run"]));
    // The new NAR and narinfo, and the bad objects it would try again.
    assert_eq!(count(&summary, "copied"), 2 + bad.len() as u64, "{summary}");
    assert_eq!(count(&summary, "present"), good.len() as u64, "{summary}");
    assert!(stderr.contains("would copy"), "{stderr}");
    assert_eq!(writes(&dev.endpoint), before, "a dry run wrote");
    let (_, summary, _) = import_json(checked_into("nix").args(["--since", "1h"]));
    assert_eq!(count(&summary, "older"), 0);
    assert_eq!(summary["failed"], 5);
    assert_eq!(writes(&dev.endpoint) - before, count(&summary, "copied"));
    let with_late = listing(&dev.endpoint, key, "nix");
    assert_eq!(with_late.len(), good.len() + 2, "{summary}");

    // Mirroring back: Cairn is the source, moto the destination; a second run copies nothing
    // and says so.
    checked(aws(&moto.endpoint, MOTO_KEY).args(["s3", "mb", "s3://fallback"]));
    let mirror = || {
        let mut command = import(&moto.endpoint, MOTO_KEY, key);
        command
            .args(["--source-endpoint", &dev.endpoint])
            .args(["s3://nix", "s3://fallback"]);
        command
    };
    let (ok, summary, stderr) = import_json(&mut mirror());
    assert!(ok, "{summary}\n{stderr}");
    assert_eq!(count(&summary, "copied"), with_late.len() as u64);
    let sizes = |l: &BTreeMap<String, (u64, String)>| -> BTreeMap<String, u64> {
        l.iter().map(|(k, (s, _))| (k.clone(), *s)).collect()
    };
    assert_eq!(
        sizes(&listing(&moto.endpoint, MOTO_KEY, "fallback")),
        sizes(&with_late)
    );
    let again = stdout(&mut mirror());
    assert!(again.starts_with("nothing to copy"), "{again}");
}

#[test]
fn verify_finds_each_planted_fault_and_nothing_else() {
    const TEST: &str = "verify_finds_each_planted_fault_and_nothing_else";
    if !have_tools(TEST, false) {
        return;
    }
    let root = tempfile::tempdir().expect("temp dir");
    let root = root.path();
    let store = root.join("store");
    let (secret, public) = signing_key(root, "cairn-verify-1");
    let (retiring, retiring_public) = signing_key(root, "cairn-verify-old-1");

    let mut files: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("v{i}.txt"), format!("verified {i}\n").into_bytes()))
        .collect();
    files.push(("payload.bin".into(), noise(200_000, 3)));
    let paths = add_files(&store, &root.join("files"), &files);
    let top = top_path(&store, &paths);
    let cache = root.join("cache");
    nix_copy(&store, &cache, Some(&secret), &[&top]);

    let dev = start_dev(&root.join("dev"));
    let key = (dev.key.0.as_str(), dev.key.1.as_str());
    create_nix_bucket(&dev, "verified", &[&public, &retiring_public]);
    let from_dir = |dir: &Path, checks: bool| {
        let mut command = import(&dev.endpoint, key, ("", ""));
        if checks {
            command.args(["--nix-cache", "--trusted-key", &public]);
        }
        command
            .arg(format!("file://{}", dir.display()))
            .arg("s3://verified");
        command
    };
    let verify = |extra: &[&str]| {
        let out = admin(&dev)
            .arg("--json")
            .args(["verify", "verified", "--s3-endpoint", &dev.endpoint])
            .args(["--progress-interval", "0"])
            .args(extra)
            .env("CAIRN_ACCESS_KEY", key.0)
            .env("CAIRN_SECRET_KEY", key.1)
            .output()
            .expect("cairn admin verify");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
            panic!(
                "no JSON report ({err}):\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.success(), report)
    };
    let faults = |report: &Value, kind: &str| -> Vec<String> {
        report[kind]["items"]
            .as_array()
            .unwrap_or_else(|| panic!("no {kind} in {report}"))
            .iter()
            .map(|f| f["key"].as_str().unwrap_or_default().to_string())
            .collect()
    };

    // A clean import from the file:// cache: a second run copies nothing and says so, and
    // verification (shallow and deep) finds nothing.
    let (ok, summary, stderr) = import_json(&mut from_dir(&cache, true));
    assert!(ok, "{summary}\n{stderr}");
    let again = stdout(&mut from_dir(&cache, true));
    assert!(again.starts_with("nothing to copy"), "{again}");
    for extra in [&[][..], &["--deep"][..]] {
        let (ok, report) = verify(extra);
        assert!(ok, "{report}");
        assert_eq!(report["faults"], 0, "{report}");
        assert_eq!(report["narinfos"], paths.len() as u64 + 1);
        assert_eq!(report["nars"], paths.len() as u64 + 1);
    }

    // The planted faults, uploaded through the gateway, which accepts each of them.
    let extras = add_files(
        &store,
        &root.join("extras"),
        &[
            ("dangling.txt".into(), b"narinfo without NAR\n".to_vec()),
            ("orphan.txt".into(), b"NAR without narinfo\n".to_vec()),
            (
                "size.txt".into(),
                b"narinfo with a wrong FileSize\n".to_vec(),
            ),
            (
                "retired.txt".into(),
                b"signed by a key about to go\n".to_vec(),
            ),
            (
                "elsewhere.txt".into(),
                b"narinfo naming another NAR\n".to_vec(),
            ),
        ],
    );
    let made = root.join("made");
    nix_copy(
        &store,
        &made,
        Some(&secret),
        &[&extras[0], &extras[1], &extras[2], &extras[4]],
    );
    let old = root.join("old");
    nix_copy(&store, &old, Some(&retiring), &[&extras[3]]);
    let plant = root.join("plant");
    std::fs::create_dir_all(plant.join("nar")).expect("plant dir");
    // Dangling: the narinfo alone.
    let (dangling, _) = narinfo(&made, &extras[0]);
    std::fs::copy(made.join(&dangling), plant.join(&dangling)).expect("copy");
    // Orphan: the NAR alone.
    let (_, orphan_text) = narinfo(&made, &extras[1]);
    let orphan = field(&orphan_text, "URL").to_string();
    std::fs::copy(made.join(&orphan), plant.join(&orphan)).expect("copy");
    let orphan_size = std::fs::metadata(plant.join(&orphan)).expect("NAR").len();
    // Wrong size: FileSize is not signed, so the gateway takes it.
    transplant(&made, &plant, &extras[2]);
    let (wrong, text) = narinfo(&made, &extras[2]);
    let size = field(&text, "FileSize");
    let edited = text.replace(
        &format!("FileSize: {size}\n"),
        &format!("FileSize: {}\n", size.parse::<u64>().expect("size") + 7),
    );
    std::fs::write(plant.join(&wrong), edited).expect("write");
    // Signed only by the key about to be retired (trusted by the bucket today).
    transplant(&old, &plant, &extras[3]);
    let (retired, _) = narinfo(&old, &extras[3]);
    // Another path's NAR: URL, FileHash and FileSize are not signed either; only its
    // NarHash (signed) gives it away, which only --deep reads.
    let (elsewhere, text) = narinfo(&made, &extras[4]);
    let (_, donor) = narinfo(&cache, &paths[0]);
    let mut edited = String::new();
    for line in text.lines() {
        let replaced = ["URL", "FileHash", "FileSize"]
            .iter()
            .find(|f| line.starts_with(&format!("{f}: ")))
            .map(|f| format!("{f}: {}", field(&donor, f)));
        edited.push_str(&replaced.unwrap_or_else(|| line.to_string()));
        edited.push('\n');
    }
    std::fs::write(plant.join(&elsewhere), edited).expect("write");
    let (ok, summary, stderr) = import_json(&mut from_dir(&plant, false));
    assert!(
        ok,
        "the gateway refused a planted fault: {summary}\n{stderr}"
    );

    // Shallow, with the bucket's keys: dangling, orphan, wrong size; nothing else.
    let (ok, report) = verify(&[]);
    assert!(!ok, "faults must fail the exit status");
    assert_eq!(
        faults(&report, "dangling"),
        vec![dangling.clone()],
        "{report}"
    );
    assert_eq!(faults(&report, "orphans"), vec![orphan.clone()], "{report}");
    assert_eq!(report["orphans"]["bytes"], orphan_size);
    assert_eq!(
        faults(&report, "wrong_size"),
        vec![wrong.clone()],
        "{report}"
    );
    assert!(faults(&report, "bad_signatures").is_empty(), "{report}");
    assert_eq!(report["faults"], 3, "{report}");

    // Once the old key is no longer trusted, its narinfo is a bad signature.
    let (_, report) = verify(&["--trusted-key", &public]);
    assert_eq!(
        faults(&report, "bad_signatures"),
        vec![retired.clone()],
        "{report}"
    );
    assert_eq!(report["faults"], 4, "{report}");

    // Deep: the narinfo naming another path's NAR, too.
    let (_, report) = verify(&["--deep", "--trusted-key", &public]);
    assert_eq!(
        faults(&report, "hash_mismatches"),
        vec![elsewhere.clone()],
        "{report}"
    );
    assert_eq!(faults(&report, "bad_signatures"), vec![retired], "{report}");
    assert_eq!(faults(&report, "dangling"), vec![dangling], "{report}");
    assert_eq!(faults(&report, "orphans"), vec![orphan], "{report}");
    assert_eq!(faults(&report, "wrong_size"), vec![wrong], "{report}");
    assert_eq!(report["faults"], 5, "{report}");
}
