//! A backup taken with `cairn admin backup` while writes stream in, restored with
//! `cairn coordinator --init --restore` into a fresh three-member group, gives back exactly
//! the catalog of the backup.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use support::coordinator::{Member, TOKEN, admin, join_members, wait_status};

#[test]
fn backup_under_load_restores_identically_into_a_new_group() {
    let root = tempfile::tempdir().unwrap();
    let mut old = Member::new(1, &root.path().join("old"));
    old.start(true);

    // A writer keeps creating buckets while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, url) = (stop.clone(), old.url());
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .new_agent();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let response = agent
                    .post(format!("{url}/v1/buckets"))
                    .header("Authorization", format!("Bearer {TOKEN}"))
                    .send_json(serde_json::json!({ "name": format!("load-{n:05}") }));
                // 201: created; 409: an earlier try that looked failed did commit. Anything
                // else (a busy moment) is retried with the same name, so the names that
                // exist are always load-00000 .. load-(n-1) with no gap.
                match response.map(|r| r.status().as_u16()) {
                    Ok(201) | Ok(409) => n += 1,
                    _ => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
            n
        })
    };
    wait_status(&old, "some writes in", |s| {
        s["buckets"].as_u64() >= Some(20)
    });
    let file = root.path().join("catalog.backup");
    admin(&old, &["backup", file.to_str().unwrap()]).unwrap();
    wait_status(&old, "more writes after the backup", |s| {
        s["buckets"].as_u64() >= Some(60)
    });
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();

    let bytes = std::fs::read(&file).unwrap();
    let dump = cairn_coordinator::catalog::read_backup(&bytes)
        .unwrap()
        .dump;
    let backed_up: Vec<String> = dump.buckets.iter().map(|(name, _)| name.clone()).collect();
    assert!(
        backed_up.len() >= 20 && backed_up.len() < written,
        "{} of {written}",
        backed_up.len()
    );
    // A point in time: every bucket up to the last one in the backup, none after.
    let expected: Vec<String> = (0..backed_up.len())
        .map(|n| format!("load-{n:05}"))
        .collect();
    assert_eq!(backed_up, expected);

    // A new group from the backup, then two more members that must get it by snapshot.
    let new_root = root.path().join("new");
    let mut members: Vec<Member> = (1..=3).map(|id| Member::new(id, &new_root)).collect();
    // The new group runs under the old group's key (the backup names it).
    std::fs::create_dir_all(&members[0].dir).unwrap();
    std::fs::copy(
        old.dir.join("coordinator.key"),
        members[0].dir.join("coordinator.key"),
    )
    .unwrap();
    members[0].start_with(true, &["--restore", file.to_str().unwrap()]);
    join_members(&mut members);
    let count = backed_up.len() as u64;
    for member in &members {
        wait_status(member, "restored catalog", |s| {
            s["buckets"].as_u64() == Some(count)
        });
    }
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&admin(&members[0], &["--json", "buckets"]).unwrap()).unwrap();
    let names: Vec<&str> = listed.iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, expected);

    // A restore always starts a new group: without --init it is refused.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "coordinator",
            "--restore",
            file.to_str().unwrap(),
            "--data-dir",
        ])
        .arg(root.path().join("elsewhere"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--init"));
}

/// The segment mask key derives from the coordinator key, so a backup is only half of
/// what a restore needs. With every coordinator data dir destroyed, a restore refuses to
/// start without the key the backup names, or under another key, saying which key it
/// needs; with the kept key it reads every object back from the untouched nodes.
#[test]
fn a_restore_needs_the_kept_coordinator_key_and_then_reads_every_object() {
    use support::healing::{filled_cluster, objects};

    let (mut cluster, gateway, access) = filled_cluster();
    let file = cluster.root.path().join("catalog.backup");
    let said = admin(&cluster.coordinator, &["backup", file.to_str().unwrap()]).unwrap();
    let needed = cluster.key.to_string();
    assert!(said.contains(&needed), "backup output names no key: {said}");
    let backup = cairn_coordinator::catalog::read_backup(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(backup.coordinator, Some(cluster.key));

    let escrow = cluster.root.path().join("escrowed-coordinator.key");
    std::fs::copy(cluster.coordinator.dir.join("coordinator.key"), &escrow).unwrap();
    drop(gateway);
    cluster.coordinator.kill9();
    std::fs::remove_dir_all(&cluster.coordinator.dir).unwrap();

    let restore_in = |dir: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["coordinator", "--init", "--restore", file.to_str().unwrap()])
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .env("CAIRN_ADMIN_TOKEN", support::coordinator::TOKEN)
            .output()
            .unwrap()
    };
    // No key at all: refused, not started under a fresh one.
    let keyless = cluster.root.path().join("keyless");
    let out = restore_in(&keyless);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a keyless restore started");
    assert!(
        stderr.contains(&needed),
        "the refusal names no key: {stderr}"
    );
    assert!(
        !keyless.join("coordinator.key").exists(),
        "a new key was made"
    );
    // Another key: refused.
    let wrong = cluster.root.path().join("wrong");
    std::fs::create_dir_all(&wrong).unwrap();
    cairn_proto::identity::SecretKey::load_or_create(&wrong.join("coordinator.key")).unwrap();
    let out = restore_in(&wrong);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a restore under another key started");
    assert!(
        stderr.contains(&needed),
        "the refusal names no key: {stderr}"
    );

    // The kept key, on a fresh data dir at the old addresses: every object reads back.
    std::fs::create_dir_all(&cluster.coordinator.dir).unwrap();
    std::fs::copy(&escrow, cluster.coordinator.dir.join("coordinator.key")).unwrap();
    cluster
        .coordinator
        .start_with(true, &["--restore", file.to_str().unwrap()]);
    cluster.wait_nodes(|node| node["last_heartbeat_ms"].is_u64());
    let gateway = cluster.start_gateway();
    objects("check", &gateway.endpoint, &access).unwrap();
}
