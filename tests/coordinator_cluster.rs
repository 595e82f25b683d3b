//! Three `cairn coordinator` processes formed with the documented commands: commits
//! acknowledged before a `kill -9` of the leader survive it, a new leader serves within
//! seconds, a member that was down through a compaction catches up, and a full restart
//! gives identical state. Wrong tokens and strangers are refused.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::coordinator::{
    Member, TOKEN, admin, coordinator_key, join_members, member_key, status, wait_status,
};

fn create_bucket(agent: &ureq::Agent, member: &Member, name: &str) -> Result<(), String> {
    let response = agent
        .post(format!("{}/v1/buckets", member.url()))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send_json(serde_json::json!({ "name": name }))
        .map_err(|e| e.to_string())?;
    if response.status().as_u16() == 201 {
        Ok(())
    } else {
        Err(response.status().to_string())
    }
}

#[test]
fn three_members_survive_leader_kill_compaction_and_restart() {
    let root = tempfile::tempdir().unwrap();
    let mut members: Vec<Member> = (1..=3).map(|id| Member::new(id, root.path())).collect();

    // Form the group as the README says: init the first, copy its key, add the others.
    members[0].start(true);
    join_members(&mut members);
    let formed = wait_status(&members[2], "three voters", |s| {
        s["members"]
            .as_array()
            .is_some_and(|m| m.len() == 3 && m.iter().all(|m| m["voter"] == true))
    });
    let leader = formed["leader"].as_u64().unwrap();

    // A stream of commits, round-robin over members (followers redirect), while the leader
    // is killed part-way; every bucket whose creation was acknowledged must survive.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .new_agent();
    let mut acknowledged = Vec::new();
    let mut killed_at = None;
    for n in 0..60 {
        if n == 25 {
            members[(leader - 1) as usize].kill9();
            killed_at = Some(Instant::now());
        }
        let name = format!("b-{n:03}");
        // Try members until one acknowledges (a dead one, or one between leaders, fails).
        let deadline = Instant::now() + Duration::from_secs(20);
        'retry: loop {
            for member in members.iter().filter(|m| m.child.is_some()) {
                let target = status(member)
                    .and_then(|s| s["leader"].as_u64())
                    .and_then(|l| members.iter().find(|m| m.id == l && m.child.is_some()));
                if let Some(target) = target
                    && create_bucket(&agent, target, &name).is_ok()
                {
                    acknowledged.push(name.clone());
                    break 'retry;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no member accepted {name} for 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let failover = killed_at.unwrap().elapsed();
    assert_eq!(acknowledged.len(), 60);

    let survivors: Vec<&Member> = members.iter().filter(|m| m.child.is_some()).collect();
    let new_leader = wait_status(survivors[0], "a new leader", |s| {
        s["leader"].as_u64().is_some_and(|l| l != leader)
    })["leader"]
        .as_u64()
        .unwrap();
    let on_leader = admin(&members[(new_leader - 1) as usize], &["--json", "buckets"]).unwrap();
    let names: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&on_leader)
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names, acknowledged,
        "acknowledged buckets lost after the leader was killed"
    );
    println!("leader {leader} killed; 35 more commits acknowledged within {failover:?}");

    // The killed member was down through at least one compaction (snapshot every 20
    // entries); it comes back and catches up to the same state.
    let old = (leader - 1) as usize;
    members[old].start(false);
    let target = status(&members[(new_leader - 1) as usize]).unwrap()["last_applied"]
        .as_u64()
        .unwrap();
    for member in &members {
        wait_status(member, "caught up", |s| {
            s["last_applied"].as_u64() >= Some(target) && s["buckets"] == 60
        });
    }

    // All three stop at once and start again on their files: same state everywhere.
    for member in members.iter_mut() {
        member.kill9();
    }
    for member in members.iter_mut() {
        member.start(false);
    }
    for member in &members {
        let s = wait_status(member, "back with a leader", |s| {
            s["leader"].is_u64() && s["buckets"] == 60
        });
        assert_eq!(s["members"].as_array().unwrap().len(), 3);
    }

    // Refusals: a wrong token, and no token at all.
    let wrong = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "admin",
            "--endpoint",
            &members[0].url(),
            "--token",
            "not-the-token-at-all",
            "buckets",
        ])
        .env_remove("CAIRN_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong admin token"));
    let bare = agent
        .get(format!("{}/v1/buckets", members[0].url()))
        .call()
        .unwrap();
    assert_eq!(bare.status().as_u16(), 401);
    let health = agent
        .get(format!("{}/health", members[0].url()))
        .call()
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

/// Raft traffic is heard only from registered member keys: a client holding the
/// coordinator key itself (a copied key file, say) but no member key is cut off before any
/// stream is served, and so is a stranger. The members list shows every member's key.
#[test]
fn only_registered_member_keys_speak_raft() {
    use cairn_coordinator::raft::network::RAFT_ALPN;
    use cairn_proto::identity::SecretKey;
    let root = tempfile::tempdir().unwrap();
    let mut members: Vec<Member> = (1..=2).map(|id| Member::new(id, root.path())).collect();
    members[0].start(true);
    join_members(&mut members);
    let formed = wait_status(&members[1], "two voters", |s| {
        s["members"]
            .as_array()
            .is_some_and(|m| m.len() == 2 && m.iter().all(|m| m["voter"] == true))
    });
    for (member, view) in members.iter().zip(formed["members"].as_array().unwrap()) {
        assert_eq!(
            view["key"],
            support::coordinator::member_key(member)
                .to_string()
                .as_str()
        );
    }
    let coordinator = SecretKey::load(&members[0].dir.join("coordinator.key")).unwrap();
    let member_two = SecretKey::load(&members[1].dir.join("member.key")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // How the member treats a Raft connection from `key`: the reason it closed it within
    // two seconds, or None if it kept it open.
    let verdict = |key: &SecretKey| {
        runtime.block_on(async {
            let client =
                cairn_proto::transport::client_endpoint("127.0.0.1:0".parse().unwrap(), key)
                    .unwrap();
            let conn = cairn_proto::transport::connect(
                &client,
                key,
                members[0].quic,
                &coordinator.public(),
                RAFT_ALPN,
            )
            .await
            .unwrap();
            tokio::time::timeout(Duration::from_secs(2), conn.closed())
                .await
                .ok()
                .map(|reason| reason.to_string())
        })
    };
    assert_eq!(
        verdict(&member_two),
        None,
        "a registered member was cut off"
    );
    for (who, key) in [
        ("the coordinator key", coordinator.clone()),
        ("a stranger", SecretKey::generate()),
    ] {
        let closed = verdict(&key).unwrap_or_else(|| panic!("{who} was heard on the Raft channel"));
        assert!(
            closed.contains("not a coordinator member"),
            "{who}: {closed}"
        );
    }
}

/// A member that has been started but not yet added has no membership to check a caller
/// against; a stranger who reaches it first must still not be heard (it could otherwise
/// hand it a membership of its own, register itself as a gateway and read the mask key).
/// Every Raft call carries the coordinator key's signature over the caller's member key,
/// which only the group's members can make: a stranger's call is refused unanswered, and
/// the group's own `members add` still brings the member in.
#[test]
fn a_member_not_yet_added_hears_raft_only_from_its_own_group() {
    use cairn_coordinator::raft::network::{
        MAX_RAFT_FRAME, MemberCredential, RAFT_ALPN, RaftCall, RaftRequest, RaftResponse,
    };
    use cairn_proto::identity::SecretKey;
    use cairn_proto::wire::{read_frame_within, write_frame_within};
    let root = tempfile::tempdir().unwrap();
    let mut members: Vec<Member> = (1..=2).map(|id| Member::new(id, root.path())).collect();
    members[0].start(true);
    std::fs::create_dir_all(&members[1].dir).unwrap();
    std::fs::copy(
        members[0].dir.join("coordinator.key"),
        members[1].dir.join("coordinator.key"),
    )
    .unwrap();
    members[1].start(false);
    let coordinator = coordinator_key(&members[0]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // A stranger's vote request, with a credential it signed itself: the answer it got (if
    // any) and why the connection closed.
    let stranger = SecretKey::generate();
    let (answer, closed) = runtime.block_on(async {
        let client =
            cairn_proto::transport::client_endpoint("127.0.0.1:0".parse().unwrap(), &stranger)
                .unwrap();
        let conn = cairn_proto::transport::connect(
            &client,
            &stranger,
            members[1].quic,
            &coordinator,
            RAFT_ALPN,
        )
        .await
        .expect("a member with no membership yet accepts the connection");
        let call = RaftCall {
            credential: MemberCredential::forged(&stranger, &stranger.public()),
            request: RaftRequest::Vote(openraft::raft::VoteRequest::new(
                openraft::Vote::new(7, 99),
                None,
            )),
        };
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        write_frame_within(&mut send, &call, MAX_RAFT_FRAME)
            .await
            .unwrap();
        let _ = send.finish();
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            read_frame_within::<_, RaftResponse>(&mut recv, MAX_RAFT_FRAME),
        )
        .await;
        let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .map(|reason| reason.to_string());
        (answer, closed)
    });
    assert!(
        !matches!(answer, Ok(Ok(_))),
        "a stranger's vote request was answered: {answer:?}"
    );
    let closed = closed.expect("the stranger's connection stayed open");
    assert!(closed.contains("no member credential"), "{closed}");
    // The group's own members add still works: the member becomes a voter.
    let (id, quic, adm) = (
        members[1].id.to_string(),
        members[1].quic.to_string(),
        members[1].admin.to_string(),
    );
    let key = member_key(&members[1]).to_string();
    admin(
        &members[0],
        &[
            "members", "add", "--id", &id, "--addr", &quic, "--admin", &adm, "--key", &key,
        ],
    )
    .unwrap();
    wait_status(&members[1], "two voters", |s| {
        s["members"]
            .as_array()
            .is_some_and(|m| m.len() == 2 && m.iter().all(|m| m["voter"] == true))
    });
}

/// The admin token a first start makes is written to the data dir, readable by its owner
/// only, and never printed (stdout ends up in journald): the start says where it is.
#[test]
fn the_admin_token_is_kept_in_a_private_file_and_never_printed() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;

    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("c1");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["coordinator", "--init", "--id", "1"])
        .arg("--data-dir")
        .arg(&dir)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env_remove("CAIRN_ADMIN_TOKEN")
        .env("CAIRN_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut printed = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let done = line.starts_with("admin token written to");
        printed.push(line);
        if done {
            break;
        }
    }
    child.kill().unwrap();
    let stderr = {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut text).unwrap();
        text
    };
    child.wait().unwrap();
    let path = dir.join("admin.token");
    let token = std::fs::read_to_string(&path).unwrap();
    let token = token.trim();
    assert!(token.len() >= 16, "token file holds {token:?}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin.token mode {mode:o}");
    let printed = printed.join("\n");
    assert!(
        printed.contains(&path.display().to_string()),
        "the start does not say where the token is:\n{printed}"
    );
    assert!(
        !printed.contains(token),
        "the token was printed:\n{printed}"
    );
    assert!(!stderr.contains(token), "the token was logged:\n{stderr}");
}

/// An admin write resent with the same `Idempotency-Key` (its answer was lost) gets the
/// first attempt's outcome: the bucket it created answers 201 again, not 409. A new key,
/// or none, is a new request and meets the existing bucket; a malformed key is refused.
#[test]
fn a_resent_admin_write_answers_its_first_outcome() {
    let root = tempfile::tempdir().unwrap();
    let mut member = Member::new(1, root.path());
    member.start(true);
    wait_status(&member, "a leader", |s| s["leader"].is_u64());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let post = |key: Option<&str>| {
        let mut request = agent
            .post(format!("{}/v1/buckets", member.url()))
            .header("Authorization", format!("Bearer {TOKEN}"));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request
            .send_json(serde_json::json!({ "name": "resent" }))
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(post(Some("first-attempt")), 201);
    assert_eq!(
        post(Some("first-attempt")),
        201,
        "a resend must not conflict"
    );
    assert_eq!(post(Some("another-request")), 409);
    assert_eq!(post(None), 409);
    assert_eq!(post(Some(&"x".repeat(129))), 400);
    let s = status(&member).unwrap();
    assert_eq!(s["buckets"], 1);
}
