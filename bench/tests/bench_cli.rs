//! The `cairn-bench` commands run end to end and end with the JSON lines scripts rely on.

use std::process::Command;

#[test]
fn bench_erasure_prints_a_table_and_a_json_line() {
    let output = Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
        .args(["erasure", "--k", "4", "--m", "2", "--size", "1MiB"])
        .args(["--iterations", "1", "--stream", "8MiB"])
        .output()
        .expect("run cairn-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("encode + hash all shards"), "{stdout}");
    assert!(stdout.contains("mask + encode + hash"), "{stdout}");
    let last = stdout.lines().last().expect("some output");
    let json: serde_json::Value = serde_json::from_str(last).expect("last line is JSON");
    for key in [
        "memcpy_gib_s",
        "encode_gib_s",
        "encode_hash_gib_s",
        "encode_hash_mask_gib_s",
        "unmask_gib_s",
        "rebuild_gib_s",
        "stream_gib_s",
    ] {
        let value = json[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing: {last}"));
        assert!(value > 0.0, "{key} = {value}");
    }
    assert_eq!(json["k"], 4);
    assert_eq!(json["m"], 2);
}

#[test]
fn bench_erasure_refuses_an_impossible_code() {
    let output = Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
        .args(["erasure", "--k", "0", "--stream", "0"])
        .output()
        .expect("run cairn-bench");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("at least one data shard"), "{stderr}");
}

#[test]
fn bench_coordinator_commits_through_raft_and_sizes_the_catalog() {
    let output = Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
        .args(["coordinator", "--members", "1", "--writes", "50"])
        .args(["--concurrency", "4", "--catalog-objects", "1000"])
        .env("CAIRN_LOG", "warn")
        .output()
        .expect("run cairn-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(json["commits_per_s"].as_f64().unwrap() > 0.0, "{json}");
    // An inline object holds its 1536-byte body, so it cannot cost less than that.
    let per_object = json["catalog_bytes_per_object"].as_f64().unwrap();
    assert!(per_object > 1536.0, "{json}");
}

#[test]
fn bench_catalog_loads_a_mix_and_times_each_loop_from_the_index() {
    let output = Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
        .args(["catalog", "--objects", "2000", "--nodes", "16"])
        .env("CAIRN_LOG", "warn")
        .output()
        .expect("run cairn-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(json["bytes_per_object"].as_f64().unwrap() > 0.0, "{json}");
    for round in [
        "placed_on",
        "audit_sample",
        "gc_compare_one_node",
        "rebalance_candidates",
        "survey",
        "survey_round_healthy",
        "survey_round_node_lost",
        "survey_pass_node_lost",
    ] {
        assert!(json[format!("{round}_ms")].is_f64(), "{round}: {json}");
    }
    // 600 NARs of 16 shards on 16 nodes: every node holds one shard of each.
    assert!(stdout.contains("600 shards"), "{stdout}");
    assert!(stdout.contains("600 segments"), "{stdout}");
    // The incremental survey with node 0 lost rebuilds exactly the node's segments.
    assert!(
        stdout.contains("600 rebuilds of the node's 600 shards, pass complete"),
        "{stdout}"
    );
    assert!(stdout.contains("600 rebuilds in 1 rounds"), "{stdout}");
}

#[test]
fn bench_repair_restores_full_margin_after_losing_a_node() {
    let output = Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
        .args(["repair", "--nodes", "4", "--k", "2", "--m", "1"])
        .args([
            "--data",
            "4MiB",
            "--object-size",
            "1MiB",
            "--segment-size",
            "1MiB",
        ])
        .env("CAIRN_LOG", "warn")
        .output()
        .expect("run cairn-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().expect("some output");
    let json: serde_json::Value = serde_json::from_str(last).expect("last line is JSON");
    for key in [
        "node_bytes",
        "bandwidth_bytes_s",
        "lost_after_s",
        "repair_s",
        "moved_bytes",
        "ideal_s_x_over_bw",
        "ideal_s_moved_over_bw",
        "ratio",
    ] {
        let value = json[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing: {last}"));
        assert!(value > 0.0, "{key} = {value}");
    }
    // Every shard the stopped node held was rebuilt, each once.
    assert_eq!(json["moved_bytes"], json["node_bytes"], "{last}");
    assert_eq!(json["moved_shards"], json["node_shards"], "{last}");
    // Lost comes after 2 s of silence counted from the last heartbeat, which can be up to
    // one heartbeat interval (0.2 s) before the node stopped.
    assert!(json["lost_after_s"].as_f64().unwrap() >= 1.7, "{last}");
}
