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
    let dump = cairn_coordinator::catalog::read_backup(&bytes).unwrap();
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
