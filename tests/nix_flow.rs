//! The README's Nix section, with real Nix: a closure signed into a `file://` cache by
//! `nix copy`, uploaded with `aws s3 sync` into a nix-cache bucket, and substituted back by
//! `nix-store -r` from the gateway over plain HTTP into an empty store. A narinfo signed by
//! a key the bucket does not trust is refused on the way in. A NAR uploaded as a multipart
//! upload (as the new Hydra queue runner does) is checked when the upload completes:
//! accepted under its own name, refused under another.
//!
//! Skipped, with a message saying why, where Nix is not installed (`.ci/run` installs
//! Debian's `nix-bin`).

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::cluster::TestCluster;
use support::coordinator::admin;
use support::s3clients::aws;

/// `nix` subcommands are experimental in the Nix versions Debian ships.
const NIX: [&str; 2] = ["--extra-experimental-features", "nix-command"];

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
    String::from_utf8(checked(command).stdout)
        .unwrap()
        .trim()
        .to_string()
}

/// A signing key pair made by `nix key`: (secret file, public key text).
fn signing_key(dir: &Path, name: &str) -> (std::path::PathBuf, String) {
    let secret =
        stdout(
            Command::new("nix")
                .args(NIX)
                .args(["key", "generate-secret", "--key-name", name]),
        );
    let path = dir.join(format!("{name}.sk"));
    std::fs::write(&path, &secret).unwrap();
    let public = Command::new("nix")
        .args(NIX)
        .args(["key", "convert-secret-to-public"])
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .unwrap();
    assert!(public.status.success());
    (
        path,
        String::from_utf8(public.stdout).unwrap().trim().to_string(),
    )
}

#[test]
fn nix_copies_into_a_nix_cache_bucket_and_substitutes_from_it() {
    if Command::new("nix").arg("--version").output().is_err() {
        eprintln!(
            "SKIPPED nix_copies_into_a_nix_cache_bucket_and_substitutes_from_it: no `nix` command (Debian: apt-get install nix-bin)"
        );
        return;
    }
    let cluster = TestCluster::start(&["org-a", "org-b", "org-c"]);
    let gateway = cluster.start_gateway();
    let key = cluster.access_key();
    let dir = cluster.root.path().join("nix");
    std::fs::create_dir_all(&dir).unwrap();
    let (secret, public) = signing_key(&dir, "cairn-test-1");
    admin(
        &cluster.coordinator,
        &[
            "bucket",
            "create",
            "nix",
            "--public-read",
            "--nix-cache",
            "--trusted-key",
            &public,
            "--k",
            "2",
            "--m",
            "1",
        ],
    )
    .unwrap();

    // A closure in a store of its own: a 300 KiB file (its NAR goes to shards on the nodes)
    // referenced by a small one (inline in the catalog).
    let source = dir.join("source-store");
    let payload: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("payload.bin"), &payload).unwrap();
    let big = stdout(
        Command::new("nix-store")
            .arg("--store")
            .arg(&source)
            .arg("--add")
            .arg(dir.join("payload.bin")),
    );
    let top = stdout(
        Command::new("nix-instantiate")
            .arg("--store")
            .arg(&source)
            .args(["--eval", "--read-write-mode", "-E"])
            .arg(format!(
                "builtins.toFile \"top.txt\" \"depends on ${{builtins.storePath \"{big}\"}} ({})\"",
                std::process::id()
            )),
    )
    .trim_matches('"')
    .to_string();

    let cache = dir.join("out");
    checked(
        Command::new("nix")
            .args(NIX)
            .arg("copy")
            .arg("--store")
            .arg(&source)
            .arg("--to")
            .arg(format!(
                "file://{}?secret-key={}&compression=zstd",
                cache.display(),
                secret.display()
            ))
            .arg(&top),
    );
    checked(&mut aws(
        &gateway.endpoint,
        &key,
        &[
            "s3",
            "sync",
            cache.to_str().unwrap(),
            "s3://nix/",
            "--only-show-errors",
        ],
    ));

    // Substitute the closure into an empty store from the gateway, anonymously.
    let target = dir.join("target-store");
    checked(
        Command::new("nix-store")
            .arg("--store")
            .arg(&target)
            .args(["-r", &top])
            .args(["--option", "substituters"])
            .arg(format!("{}/nix", gateway.endpoint))
            .args(["--option", "trusted-public-keys", &public]),
    );
    let fetched = std::fs::read(target.join(big.trim_start_matches('/'))).unwrap();
    assert!(fetched == payload, "the substituted file differs");
    let top_text = std::fs::read_to_string(target.join(top.trim_start_matches('/'))).unwrap();
    assert!(top_text.contains(&big), "{top_text}");

    // The same narinfo signed by a key the bucket does not trust is refused, and the
    // accepted one is unchanged.
    let (other, _) = signing_key(&dir, "stranger-1");
    let forged = dir.join("forged");
    checked(
        Command::new("nix")
            .args(NIX)
            .arg("copy")
            .arg("--store")
            .arg(&source)
            .arg("--to")
            .arg(format!(
                "file://{}?secret-key={}",
                forged.display(),
                other.display()
            ))
            .arg(&top),
    );
    let hash = top
        .trim_start_matches("/nix/store/")
        .split('-')
        .next()
        .unwrap()
        .to_string();
    let narinfo = forged.join(format!("{hash}.narinfo"));
    let out = aws(
        &gateway.endpoint,
        &key,
        &[
            "s3",
            "cp",
            narinfo.to_str().unwrap(),
            &format!("s3://nix/{hash}.narinfo"),
        ],
    )
    .output()
    .unwrap();
    assert!(
        !out.status.success(),
        "a narinfo signed by an untrusted key was accepted"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("AccessDenied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let served = checked(&mut aws(
        &gateway.endpoint,
        &key,
        &["s3", "cp", &format!("s3://nix/{hash}.narinfo"), "-"],
    ))
    .stdout;
    assert_eq!(
        served,
        std::fs::read(cache.join(format!("{hash}.narinfo"))).unwrap()
    );

    // The same NARs again, each as a multipart upload: accepted under their own names,
    // refused under a name that is not their hash, and then not visible.
    let nar_dir = cache.join("nar");
    let mut nars: Vec<_> = std::fs::read_dir(&nar_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    nars.sort();
    for nar in &nars {
        let name = nar.file_name().unwrap().to_str().unwrap().to_string();
        let out = support::s3clients::boto3(
            &gateway.endpoint,
            &key,
            "multipart",
            "nix",
            &format!("nar/{name}"),
            nar,
        )
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "multipart NAR {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let wrong = "nar/0000000000000000000000000000000000000000000000000000.nar.zst";
    let out =
        support::s3clients::boto3(&gateway.endpoint, &key, "multipart", "nix", wrong, &nars[0])
            .output()
            .unwrap();
    assert!(
        !out.status.success(),
        "a misnamed multipart NAR was accepted"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("AccessDenied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = checked(&mut aws(
        &gateway.endpoint,
        &key,
        &["s3", "ls", "s3://nix/nar/"],
    ))
    .stdout;
    assert!(
        !String::from_utf8_lossy(&listed).contains("0000000000000000"),
        "the refused NAR is visible"
    );
}
