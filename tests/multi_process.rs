//! The multi-process cluster formed with the documented commands (README, "Running a
//! coordinator group"): three `cairn coordinator` members, six `cairn node`s in three
//! organisations joined with invitations, and two `cairn gateway`s that know all three
//! members. An object uploaded with the aws cli through one gateway reads back byte-exact
//! and is listed through the other. Then the Raft leader is `kill -9`ed: once the other two
//! elect a new leader, the gateways find it by themselves: reads through the second gateway
//! and a new upload through the first succeed, and the new object reads back through the
//! second.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::NodeProcess;
use support::cluster::GatewayProcess;
use support::coordinator::{
    Member, admin, coordinator_key, invite, join_members, node_entry, status, wait_nodes,
    wait_status,
};
use support::s3clients::{aws, boto3, run};

/// Runs a fresh `command()` until one succeeds, at most for `limit`, and returns how long
/// that took; every failure's stderr goes into the message if none succeeds.
fn until_ok(what: &str, limit: Duration, mut command: impl FnMut() -> Command) -> Duration {
    let started = Instant::now();
    let mut failures = Vec::new();
    loop {
        let mut cmd = command();
        let out = cmd.output().unwrap_or_else(|err| panic!("{cmd:?}: {err}"));
        if out.status.success() {
            if !failures.is_empty() {
                println!(
                    "{what}: {} failed attempt(s) before success",
                    failures.len()
                );
            }
            return started.elapsed();
        }
        failures.push(format!(
            "after {:?}: {}",
            started.elapsed(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
        assert!(
            started.elapsed() < limit,
            "{what} never succeeded within {limit:?}; attempts:\n{}",
            failures.join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn assert_file(path: &Path, expected: &[u8], what: &str) {
    let got = std::fs::read(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    assert!(
        got == expected,
        "{what}: {} bytes read back, {} written{}",
        got.len(),
        expected.len(),
        got.iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .map(|at| format!(", first difference at byte {at}"))
            .unwrap_or_default()
    );
}

#[test]
fn two_gateways_over_three_coordinators_survive_the_leader_kill() {
    let started = Instant::now();
    let root = tempfile::tempdir().unwrap();

    // Three members: the first forms the group, the others get a copy of its coordinator
    // key and are added through it.
    let mut members: Vec<Member> = (1..=3).map(|id| Member::new(id, root.path())).collect();
    members[0].start(true);
    join_members(&mut members);
    wait_status(&members[0], "three voting members", |s| {
        s["members"]
            .as_array()
            .is_some_and(|m| m.len() == 3 && m.iter().all(|m| m["voter"] == true))
    });
    let key = coordinator_key(&members[0]);

    // Six nodes in three organisations, each joined with its own invitation.
    let mut nodes = Vec::new();
    for (i, org) in ["org-a", "org-a", "org-b", "org-b", "org-c", "org-c"]
        .iter()
        .enumerate()
    {
        let token = invite(&members[0], org);
        let dir = root.path().join(format!("n{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let extra = format!(
            "join = \"{token}\"\norg = \"{org}\"\nsite = \"site-{org}\"\nheartbeat_interval_ms = 100\ncapacity = \"1GiB\""
        );
        nodes.push(NodeProcess::start(&dir, &key, &extra));
    }
    wait_nodes(
        &members[0],
        "all six nodes heartbeated",
        Duration::from_secs(60),
        |view| {
            nodes
                .iter()
                .all(|n| node_entry(view, &n.id).is_some_and(|e| e["last_heartbeat_ms"].is_u64()))
        },
    );

    // Two gateways, each told every member, each registered.
    let addrs: Vec<_> = members.iter().map(|m| m.quic).collect();
    let gateways: Vec<GatewayProcess> = ["gw-a", "gw-b"]
        .iter()
        .map(|name| {
            let gateway = GatewayProcess::start(&root.path().join(name), &addrs, &key);
            admin(
                &members[0],
                &["gateway", "add", &gateway.key.to_string(), "--name", name],
            )
            .unwrap_or_else(|err| panic!("gateway add {name}: {err}"));
            gateway
        })
        .collect();
    let (a, b) = (&gateways[0].endpoint, &gateways[1].endpoint);

    admin(
        &members[0],
        &[
            "bucket",
            "create",
            "cache",
            "--k",
            "4",
            "--m",
            "2",
            "--segment-size",
            "1MiB",
        ],
    )
    .unwrap_or_else(|err| panic!("bucket create: {err}"));
    let created: serde_json::Value = serde_json::from_str(
        &admin(&members[0], &["--json", "key", "create", "--name", "hydra"])
            .unwrap_or_else(|err| panic!("key create: {err}")),
    )
    .unwrap();
    let s3key = (
        created["id"].as_str().unwrap().to_string(),
        created["secret"].as_str().unwrap().to_string(),
    );
    println!("cluster formed in {:?}", started.elapsed());

    // Through gateway A up, through gateway B down.
    let dir = root.path();
    let small = support::bytes(1_500, 1);
    let large = support::bytes((5 << 20) + 321, 2);
    let after = support::bytes((3 << 20) + 17, 3);
    for (name, data) in [
        ("small.bin", &small),
        ("large.bin", &large),
        ("after.bin", &after),
    ] {
        std::fs::write(dir.join(name), data).unwrap();
    }
    let put = |endpoint: &str, name: &str| {
        let file = dir.join(name);
        aws(
            endpoint,
            &s3key,
            &[
                "s3",
                "cp",
                file.to_str().unwrap(),
                &format!("s3://cache/{name}"),
            ],
        )
    };
    let get = |endpoint: &str, name: &str, to: &str| {
        let file = dir.join(to);
        aws(
            endpoint,
            &s3key,
            &[
                "s3",
                "cp",
                &format!("s3://cache/{name}"),
                file.to_str().unwrap(),
            ],
        )
    };
    run(&mut put(a, "small.bin"));
    run(&mut put(a, "large.bin"));
    run(&mut get(b, "small.bin", "small-b.bin"));
    run(&mut get(b, "large.bin", "large-b.bin"));
    assert_file(&dir.join("small-b.bin"), &small, "small.bin via gateway B");
    assert_file(&dir.join("large-b.bin"), &large, "large.bin via gateway B");
    let listing = run(&mut boto3(b, &s3key, "list", "cache", "", Path::new("-")));
    assert_eq!(
        listing.lines().collect::<Vec<_>>(),
        [
            format!("large.bin {}", large.len()),
            format!("small.bin {}", small.len())
        ],
        "listing via gateway B"
    );
    // The large object went to the nodes: 6 segments of 1 MiB, each on all six nodes.
    wait_nodes(
        &members[0],
        "shards on every node",
        Duration::from_secs(30),
        |view| {
            nodes
                .iter()
                .all(|n| node_entry(view, &n.id).is_some_and(|e| e["shards"].as_u64() >= Some(6)))
        },
    );
    println!("written via A, read via B after {:?}", started.elapsed());

    // Kill the leader with no warning.
    let before = status(&members[0]).expect("status of member 1");
    let leader = before["leader"]
        .as_u64()
        .unwrap_or_else(|| panic!("no leader in {before}"));
    let term = before["term"].as_u64().unwrap();
    let index = members.iter().position(|m| m.id == leader).unwrap();
    members[index].kill9();
    let killed = Instant::now();
    let survivor = members
        .iter()
        .find(|m| m.child.is_some())
        .expect("two members left");
    let elected = wait_status(survivor, "a new leader among the other two", |s| {
        s["leader"].as_u64().is_some_and(|l| l != leader) && s["term"].as_u64() > Some(term)
    });
    println!(
        "member {leader} (leader in term {term}) killed; member {} leads in term {} after {:?}",
        elected["leader"],
        elected["term"],
        killed.elapsed()
    );

    // The gateways were not told: they find the new leader themselves.
    let limit = Duration::from_secs(60);
    let took = until_ok("read large.bin via B after the kill", limit, || {
        get(b, "large.bin", "large-b2.bin")
    });
    assert_file(
        &dir.join("large-b2.bin"),
        &large,
        "large.bin via gateway B after the leader kill",
    );
    println!(
        "read via B {:?} after the kill (took {took:?})",
        killed.elapsed()
    );
    until_ok("read small.bin via B after the kill", limit, || {
        get(b, "small.bin", "small-b2.bin")
    });
    assert_file(
        &dir.join("small-b2.bin"),
        &small,
        "small.bin via gateway B after the leader kill",
    );
    let took = until_ok("upload via A after the kill", limit, || put(a, "after.bin"));
    println!(
        "upload via A {:?} after the kill (took {took:?})",
        killed.elapsed()
    );
    until_ok("read after.bin via B", limit, || {
        get(b, "after.bin", "after-b.bin")
    });
    assert_file(
        &dir.join("after-b.bin"),
        &after,
        "after.bin (written after the kill) via gateway B",
    );
    let listing = run(&mut boto3(b, &s3key, "list", "cache", "", Path::new("-")));
    assert_eq!(
        listing.lines().collect::<Vec<_>>(),
        [
            format!("after.bin {}", after.len()),
            format!("large.bin {}", large.len()),
            format!("small.bin {}", small.len())
        ],
        "listing via gateway B after the leader kill"
    );
    println!("done after {:?}", started.elapsed());
}
