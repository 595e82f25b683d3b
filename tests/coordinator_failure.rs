//! Failure detection with real processes: a `kill -9`ed node is suspected after
//! `suspect_after` and lost after `lost_after` while a live one stays as it was; a node back
//! before it is lost returns to vetting; and a new leader, which has heard no heartbeats yet,
//! gives every node a full grace period from its election.

mod support;

use std::time::{Duration, Instant};

use cairn_proto::identity::{NodeId, PublicKey};
use support::NodeProcess;
use support::coordinator::{
    Member, coordinator_key, invite, join_members_with, node_entry, node_state, wait_nodes,
    wait_status,
};

/// Starts a node in `root/name` that joins through `member` with its own invitation and
/// heartbeats every 200 ms.
fn join_node(root: &std::path::Path, name: &str, member: &Member, key: &PublicKey) -> NodeProcess {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let token = invite(member, name);
    NodeProcess::start(
        &dir,
        key,
        &format!("join = \"{token}\"\nheartbeat_interval_ms = 200\norg = \"{name}\""),
    )
}

/// Waits until every node in `ids` is listed as vetting with a heartbeat at the leader.
fn wait_vetting_with_heartbeats(member: &Member, ids: &[NodeId]) {
    wait_nodes(
        member,
        "every node vetting and heartbeating",
        LIMIT,
        |nodes| {
            ids.iter().all(|id| {
                node_entry(nodes, id)
                    .is_some_and(|n| n["state"] == "vetting" && n["last_heartbeat_ms"].is_u64())
            })
        },
    );
}

/// Generous bound for anything that should take seconds.
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn a_killed_node_is_suspected_then_lost_while_the_other_stays_vetting() {
    let root = tempfile::tempdir().unwrap();
    let mut member = Member::new(1, root.path());
    member.start_with(
        true,
        &["--suspect-after-secs", "2", "--lost-after-secs", "5"],
    );
    let key = coordinator_key(&member);
    let live = join_node(root.path(), "live", &member, &key);
    let mut dead = join_node(root.path(), "dead", &member, &key);
    wait_vetting_with_heartbeats(&member, &[live.id, dead.id]);

    dead.kill9();
    let killed = Instant::now();
    let live_stays_vetting = |nodes: &[serde_json::Value]| {
        assert_eq!(
            node_state(nodes, &live.id).as_deref(),
            Some("vetting"),
            "a heartbeating node changed state: {nodes:?}"
        );
    };
    wait_nodes(&member, "the killed node suspect", LIMIT, |nodes| {
        live_stays_vetting(nodes);
        let state = node_state(nodes, &dead.id);
        assert_ne!(
            state.as_deref(),
            Some("lost"),
            "lost without suspicion first"
        );
        state.as_deref() == Some("suspect")
    });
    let suspected = killed.elapsed();
    assert!(
        suspected >= Duration::from_secs(2),
        "suspected {suspected:?} after the kill, before suspect_after"
    );
    let nodes = wait_nodes(&member, "the killed node lost", LIMIT, |nodes| {
        live_stays_vetting(nodes);
        node_state(nodes, &dead.id).as_deref() == Some("lost")
    });
    let lost = killed.elapsed();
    assert!(
        lost >= Duration::from_secs(5),
        "lost {lost:?} after the kill, before lost_after"
    );
    let entry = node_entry(&nodes, &dead.id).unwrap();
    assert_eq!(entry["vetted"], false);
    assert!(entry["last_heartbeat_ms"].as_u64().unwrap() >= 5_000);
}

#[test]
fn a_suspect_node_back_before_lost_returns_to_vetting() {
    let root = tempfile::tempdir().unwrap();
    let mut member = Member::new(1, root.path());
    // lost_after far beyond the test, so only a heartbeat can move the node on.
    member.start_with(
        true,
        &["--suspect-after-secs", "2", "--lost-after-secs", "120"],
    );
    let key = coordinator_key(&member);
    let mut node = join_node(root.path(), "flaky", &member, &key);
    wait_vetting_with_heartbeats(&member, &[node.id]);

    node.kill9();
    wait_nodes(&member, "the killed node suspect", LIMIT, |nodes| {
        node_state(nodes, &node.id).as_deref() == Some("suspect")
    });
    node.restart();
    let nodes = wait_nodes(&member, "the restarted node vetting", LIMIT, |nodes| {
        let state = node_state(nodes, &node.id);
        assert_ne!(state.as_deref(), Some("lost"), "{nodes:?}");
        state.as_deref() == Some("vetting")
    });
    let entry = node_entry(&nodes, &node.id).unwrap();
    assert!(entry["last_heartbeat_ms"].as_u64().unwrap() < 2_000);
}

#[test]
fn a_new_leader_gives_every_node_a_full_grace_period() {
    const SUSPECT_SECS: u64 = 4;
    let flags = [
        "--suspect-after-secs",
        &SUSPECT_SECS.to_string(),
        "--lost-after-secs",
        "120",
    ]
    .map(str::to_string);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let root = tempfile::tempdir().unwrap();
    let mut members: Vec<Member> = (1..=3).map(|id| Member::new(id, root.path())).collect();
    members[0].start_with(true, &flags);
    join_members_with(&mut members, &flags);
    let formed = wait_status(&members[1], "three voters under member 1", |s| {
        s["leader"] == 1
            && s["members"]
                .as_array()
                .is_some_and(|m| m.len() == 3 && m.iter().all(|m| m["voter"] == true))
    });
    assert_eq!(formed["leader"], 1);

    // Invited after the group is formed, so the tokens name all three members.
    let key = coordinator_key(&members[0]);
    let live = join_node(root.path(), "live", &members[0], &key);
    let mut dead = join_node(root.path(), "dead", &members[0], &key);
    wait_vetting_with_heartbeats(&members[0], &[live.id, dead.id]);

    // The leader goes, and one node with it: the new leader has heard from neither.
    dead.kill9();
    members[0].kill9();
    let killed = Instant::now();
    let status = wait_status(&members[1], "a new leader", |s| {
        s["leader"].as_u64().is_some_and(|l| l != 1)
    });
    let elected = Instant::now();
    let new_leader = status["leader"].as_u64().unwrap();
    let observer = &members[(new_leader - 1) as usize];

    // For the whole grace period and a margin past it, the live node, which finds the new
    // leader within a heartbeat or two, is never suspected; the dead one is suspected only
    // once the grace period is over.
    let watch_until = elected + Duration::from_secs(SUSPECT_SECS + 2);
    let mut dead_suspected = None;
    wait_nodes(
        observer,
        "the grace period watched through",
        LIMIT,
        |nodes| {
            assert_eq!(
                node_state(nodes, &live.id).as_deref(),
                Some("vetting"),
                "a heartbeating node was suspected after the failover: {nodes:?}"
            );
            if dead_suspected.is_none() && node_state(nodes, &dead.id).as_deref() == Some("suspect")
            {
                dead_suspected = Some(killed.elapsed());
            }
            Instant::now() >= watch_until && dead_suspected.is_some()
        },
    );
    // The election came after the kill, so suspicion before kill + suspect_after would
    // mean the new leader did not wait a full grace period.
    let suspected = dead_suspected.unwrap();
    assert!(
        suspected >= Duration::from_secs(SUSPECT_SECS),
        "the silent node was suspected {suspected:?} after the failover began"
    );
    let nodes = wait_nodes(
        observer,
        "live node heartbeating to the new leader",
        LIMIT,
        |nodes| {
            node_entry(nodes, &live.id)
                .and_then(|n| n["last_heartbeat_ms"].as_u64())
                .is_some_and(|ms| ms < 1_000)
        },
    );
    assert_eq!(node_state(&nodes, &live.id).as_deref(), Some("vetting"));
}
