//! The deployment in `ops/`: the image is built FROM scratch out of the binary under test
//! (`ops/image/build.sh`), `ops/compose/up.sh` brings up the compose cluster of 3
//! coordinators, 8 nodes in 4 organisations and 2 gateways on a private Docker network, and
//! an object uploaded through one gateway reads back byte-exact through the other; reads
//! and writes go on after the leading coordinator member is stopped.
//!
//! Skipped, with a message saying why, where no Docker engine or compose tool answers.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::s3clients::aws;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Why the test cannot run here, if it cannot.
fn missing_docker() -> Option<String> {
    match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
    {
        Err(err) => return Some(format!("no docker command ({err})")),
        Ok(out) if !out.status.success() => {
            return Some(format!(
                "the Docker engine does not answer: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(_) => {}
    }
    let compose_v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|out| out.status.success());
    let compose_v1 = Command::new("docker-compose")
        .arg("version")
        .output()
        .is_ok_and(|out| out.status.success());
    (!compose_v2 && !compose_v1).then(|| "neither `docker compose` nor `docker-compose`".into())
}

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

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One compose project: its environment, and `down -v` plus image removal when dropped.
struct Deployment {
    env: Vec<(String, String)>,
    image: String,
}

impl Deployment {
    fn compose(&self, args: &[&str]) -> Command {
        let file = repo().join("ops/compose/docker-compose.yml");
        let v2 = Command::new("docker")
            .args(["compose", "version"])
            .output()
            .is_ok_and(|out| out.status.success());
        let mut command = if v2 {
            let mut command = Command::new("docker");
            command.arg("compose");
            command
        } else {
            Command::new("docker-compose")
        };
        command.arg("-f").arg(file).args(args);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep what the containers said: it is the only record of why.
            if let Ok(out) = self
                .compose(&["logs", "--no-color", "--tail", "40"])
                .output()
            {
                eprintln!("{}", String::from_utf8_lossy(&out.stdout));
            }
        }
        let _ = self
            .compose(&["down", "-v", "--remove-orphans", "--timeout", "5"])
            .output();
        let _ = Command::new("docker")
            .args(["image", "rm", "-f", &self.image])
            .output();
    }
}

/// Polls `attempt` until it succeeds, for at most `limit`; panics with the last failure.
fn eventually(what: &str, limit: Duration, mut attempt: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + limit;
    loop {
        match attempt() {
            Ok(()) => return,
            Err(err) if Instant::now() >= deadline => panic!("{what}: {err}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

fn copy_out(endpoint: &str, key: &(String, String), object: &str, to: &Path) -> Result<(), String> {
    let out = aws(endpoint, key, &["s3", "cp", object, to.to_str().unwrap()])
        .output()
        .map_err(|err| err.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn compose_cluster_from_a_scratch_image_serves_through_both_gateways() {
    if let Some(why) = missing_docker() {
        eprintln!(
            "SKIPPED compose_cluster_from_a_scratch_image_serves_through_both_gateways: {why}"
        );
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let tag = format!("cairn-test-{}", std::process::id());
    let image = format!("{tag}:latest");
    checked(
        Command::new(repo().join("ops/image/build.sh"))
            .arg(env!("CARGO_BIN_EXE_cairn"))
            .arg(&image),
    );
    // A /24 of its own per run, so parallel or leftover projects do not collide.
    let subnet = format!(
        "10.{}.{}",
        100 + std::process::id() % 100,
        std::process::id() % 250
    );
    let (port_1, port_2) = (free_tcp_port(), free_tcp_port());
    let deployment = Deployment {
        env: vec![
            ("COMPOSE_PROJECT_NAME".into(), tag.clone()),
            ("CAIRN_IMAGE".into(), image.clone()),
            ("CAIRN_NET".into(), subnet),
            ("CAIRN_S3_PORT_1".into(), port_1.to_string()),
            ("CAIRN_S3_PORT_2".into(), port_2.to_string()),
            (
                "CAIRN_COMPOSE_STATE".into(),
                root.path().join("cluster.env").display().to_string(),
            ),
        ],
        image,
    };
    let mut up = Command::new(repo().join("ops/compose/up.sh"));
    up.envs(deployment.env.iter().map(|(k, v)| (k, v)));
    let printed = String::from_utf8(checked(&mut up).stdout).unwrap();
    let field = |name: &str| -> Vec<String> {
        printed
            .lines()
            .filter_map(|line| line.strip_prefix(name).map(|v| v.trim().to_string()))
            .collect()
    };
    let endpoints = field("S3 endpoint:");
    assert_eq!(
        endpoints,
        [
            format!("http://127.0.0.1:{port_1}"),
            format!("http://127.0.0.1:{port_2}")
        ],
        "{printed}"
    );
    let key = (
        field("access key id:").concat(),
        field("secret access key:").concat(),
    );
    assert!(!key.0.is_empty() && !key.1.is_empty(), "{printed}");

    // A multi-segment object (4+2 on 8 nodes in 4 orgs) and a small inline one, uploaded
    // through the first gateway.
    let large: Vec<u8> = (0..9_000_000u32)
        .map(|i| (i * 31 + i / 7919) as u8)
        .collect();
    let small = b"StorePath: /nix/store/none\n".to_vec();
    std::fs::write(root.path().join("large.bin"), &large).unwrap();
    std::fs::write(root.path().join("small.txt"), &small).unwrap();
    for (file, object) in [
        ("large.bin", "s3://cache/large.bin"),
        ("small.txt", "s3://cache/small.txt"),
    ] {
        let from = root.path().join(file);
        eventually(
            &format!("upload {object} through gateway 1"),
            Duration::from_secs(60),
            || {
                let out = aws(
                    &endpoints[0],
                    &key,
                    &["s3", "cp", from.to_str().unwrap(), object],
                )
                .output()
                .map_err(|err| err.to_string())?;
                out.status
                    .success()
                    .then_some(())
                    .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
            },
        );
    }

    // Read through the second gateway.
    let back = root.path().join("back.bin");
    eventually("read through gateway 2", Duration::from_secs(30), || {
        copy_out(&endpoints[1], &key, "s3://cache/large.bin", &back)
    });
    assert!(
        std::fs::read(&back).unwrap() == large,
        "large object differs"
    );
    copy_out(&endpoints[1], &key, "s3://cache/small.txt", &back).unwrap();
    assert_eq!(std::fs::read(&back).unwrap(), small);

    // Stop the leading member: the other two elect a leader and keep the catalog, and the
    // gateways find it by themselves.
    let status = checked(&mut deployment.compose(&[
        "exec",
        "-T",
        "c1",
        "/usr/local/bin/cairn",
        "admin",
        "--endpoint",
        "http://127.0.0.1:7301",
        "--json",
        "status",
    ]));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let leader = status["leader"].as_u64().expect("a leader");
    checked(&mut deployment.compose(&["stop", "--timeout", "5", &format!("c{leader}")]));
    eventually(
        &format!("read through gateway 2 with leader c{leader} stopped"),
        Duration::from_secs(60),
        || {
            std::fs::remove_file(&back).ok();
            copy_out(&endpoints[1], &key, "s3://cache/large.bin", &back)?;
            (std::fs::read(&back).map_err(|e| e.to_string())? == large)
                .then_some(())
                .ok_or_else(|| "large object differs".to_string())
        },
    );
    let from = root.path().join("large.bin");
    checked(&mut aws(
        &endpoints[0],
        &key,
        &["s3", "cp", from.to_str().unwrap(), "s3://cache/after.bin"],
    ));
    copy_out(&endpoints[1], &key, "s3://cache/after.bin", &back).unwrap();
    assert!(
        std::fs::read(&back).unwrap() == large,
        "object written after failover differs"
    );
}
