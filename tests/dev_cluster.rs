//! `cairn dev`: the whole cluster in one process answers S3 at once with the credentials it
//! prints, serves the public bucket anonymously, and comes back with its data after a
//! `kill -9` and a second start on the same folder.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const TOKEN: &str = "dev-test-admin-token-0123456789";

struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cairn dev` and returns it with the endpoint and key it printed.
fn start(dir: &std::path::Path, base: u16) -> (Dev, String, String, String) {
    let (s3, admin) = (
        format!("127.0.0.1:{base}"),
        format!("127.0.0.1:{}", base + 1),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["dev", "--nodes", "4", "--k", "2", "--m", "1"])
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
        let line = lines.next().expect("cairn dev exited early").unwrap();
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
    (Dev(child), endpoint, id, secret)
}

fn aws(endpoint: &str, id: &str, secret: &str, args: &[&str]) -> std::process::Output {
    Command::new("aws")
        .args(["--endpoint-url", endpoint, "--region", "us-east-1"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .unwrap()
}

fn curl(url: &str) -> Vec<u8> {
    let out = Command::new("curl").args(["-sf", url]).output().unwrap();
    assert!(out.status.success(), "curl {url} failed");
    out.stdout
}

#[test]
fn dev_cluster_serves_s3_and_survives_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cairn-dev");
    // A base port with room after it for the coordinator and nodes.
    let base = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .clamp(20_000, 60_000);
    let file = root.path().join("object.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 999) as u8).collect();
    std::fs::write(&file, &data).unwrap();

    let (mut dev, endpoint, id, secret) = start(&dir, base);
    let out = aws(
        &endpoint,
        &id,
        &secret,
        &["s3", "cp", file.to_str().unwrap(), "s3://cache/object.bin"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(curl(&format!("{endpoint}/cache/object.bin")) == data);

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
        "{}",
        String::from_utf8_lossy(&admin.stderr)
    );

    dev.0.kill().unwrap();
    dev.0.wait().unwrap();
    drop(dev);
    let (_dev, endpoint2, id2, secret2) = start(&dir, base);
    assert_eq!(
        (endpoint2.as_str(), id2.as_str(), secret2.as_str()),
        (endpoint.as_str(), id.as_str(), secret.as_str())
    );
    assert!(curl(&format!("{endpoint}/cache/object.bin")) == data);
    let out = aws(&endpoint, &id, &secret, &["s3", "ls", "s3://cache/"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("object.bin"));
}
