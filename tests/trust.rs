//! Trust enforcement with real processes: a misbehaving node (the `cairn-chaos-node`
//! binary from chaos-tests/, the real node daemon with one lie switched on) joins a cluster
//! of six honest nodes with an invitation, receives shards of the objects uploaded through
//! the gateway, and is audited every 300 ms.
//!
//! The audit policy is the default (λ = 0.99, disqualified below 0.975): three failed
//! judgements in a row disqualify a node from any history. So a node that fails every
//! challenge (dropped shards, flipped bytes, audits answered from the public object) is
//! disqualified after exactly three audits of it, i.e. within three rounds (it holds
//! fewer than 1 000 shards, so it is asked one challenge a round); one that answers
//! too late, or refuses (busy, an order it calls expired…), is asked each challenge again
//! in two more rounds (containment) before it counts, so within nine. Every case then ends with the node's shards rebuilt
//! elsewhere, and a reader checking every object byte-exact all along never saw a wrong
//! byte. A node that silently loses only a fifth of its shards passes the audits of the
//! rest, yet its failures bring its score under the line: it is disqualified by audits
//! alone, and only shards it lost leave it before that; one losing a twentieth is caught
//! the same way, or has every loss found and rebuilt first. A shard whose audit fails is
//! rebuilt elsewhere at once, even when its node is never disqualified. An honest node behind a slow, lossy link passes its audits and is
//! vetted.
//! Nodes presenting another identity, or an invitation for another organisation, are
//! refused.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn_chaos_tests::misbehaviour::drops_shard;
use cairn_client::gateway_rpc::{GatewayRequest, GatewayResponse};
use cairn_client::records::ObjectBody;
use cairn_proto::identity::SecretKey;
use cairn_proto::ids::ShardId;
use cairn_proto::transport::{
    PeerPolicy, TransportError, client_endpoint, connect, server_endpoint,
};
use cairn_proto::wire::{
    COORDINATOR_ALPN, CoordinatorRequest, CoordinatorResponse, ErrorCode, Heartbeat, NODE_ALPN,
    read_frame, write_frame,
};
use support::cluster::{GatewayProcess, TestCluster};
use support::coordinator::admin;
use support::healing::{
    BUCKET, create_bucket, fast_cluster, full_margin, objects, shard_nodes, upload, wait_until,
};

/// Audit rounds every 300 ms, 1 s to answer, two retries of a missed challenge; nobody is
/// vetted during the test unless it says otherwise, so every node gets an equal share.
const AUDITS: &[&str] = &[
    "--audit-interval-ms",
    "300",
    "--audit-deadline-ms",
    "1000",
    "--audit-retries",
    "2",
];

/// Failed judgements in a row that disqualify a node under the default policy.
const FAILURES_TO_DISQUALIFY: u64 = 3;

/// The chaos node binary with `args`: built beside `cairn` by `cargo nextest run
/// --workspace` (the chaos-tests crate's own tests need it).
fn chaos(args: &[String]) -> Vec<PathBuf> {
    let path = Path::new(env!("CARGO_BIN_EXE_cairn")).with_file_name("cairn-chaos-node");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p cairn-chaos-tests`",
        path.display()
    );
    std::iter::once(path)
        .chain(args.iter().map(PathBuf::from))
        .collect()
}

/// The node's entry in `cairn admin nodes --json`.
fn entry(cluster: &TestCluster, id: &str) -> serde_json::Value {
    cluster
        .nodes_view()
        .into_iter()
        .find(|n| n["id"] == id)
        .expect("node listed")
}

/// Reads every object back byte-exact, over and over, until stopped; the first failure
/// ends it.
struct Reader {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<u32, String>>,
}

impl Reader {
    fn start(endpoint: &str, key: &(String, String)) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, endpoint, key) = (stop.clone(), endpoint.to_string(), key.clone());
        let thread = std::thread::spawn(move || {
            let mut rounds = 0;
            while !flag.load(Ordering::Relaxed) {
                objects("check", &endpoint, &key)?;
                rounds += 1;
            }
            Ok(rounds)
        });
        Reader { stop, thread }
    }

    /// Stops it; returns how many full passes it made, or the first wrong read.
    fn finish(self) -> Result<u32, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Which lie, and how its detection shows.
enum Lie {
    DropsShards,
    FlipsBytes,
    AnswersLate,
    RefetchesFromPublic,
    /// Keeps nothing and refuses every read and audit with this error code.
    Refuses(&'static str),
}

/// How a liar test's objects (those under `mixed/`) go in.
#[derive(Debug, Clone, Copy)]
enum Upload {
    /// 1 MiB segments; every object put, then read back once through the gateway.
    ReadBack,
    /// Only the bucket is made, with segments of this size: the test uploads, watching.
    BucketOnly(&'static str),
}

/// A cluster with one lying node.
struct LiarCluster {
    cluster: TestCluster,
    gateway: GatewayProcess,
    key: (String, String),
    /// The lying node's id.
    liar: String,
}

/// Six honest nodes in three organisations and a `cairn-chaos-node` started with
/// `args(gateway endpoint)` in a fourth; the coordinator audits every 300 ms (`AUDITS`,
/// each overridden by the same flag in `flags`, then the rest of `flags`) and vets nobody, so every node gets an equal share; the objects under
/// `mixed/` uploaded through the gateway as `how` says, after which the liar must have
/// received shards, or have been judged on some already.
fn liar_cluster(
    flags: &[&str],
    how: Upload,
    args: impl FnOnce(&str) -> Vec<String>,
) -> LiarCluster {
    // A flag in `flags` replaces AUDITS' value of it (the coordinator refuses one twice).
    let cluster_flags: Vec<&str> = AUDITS
        .chunks(2)
        .filter(|pair| !flags.contains(&pair[0]))
        .flatten()
        .copied()
        .chain(["--vetting-audits", "1000000"])
        .chain(flags.iter().copied())
        .collect();
    let mut cluster = fast_cluster(&["a", "a", "b", "b", "c", "c"], &cluster_flags);
    let gateway = cluster.start_gateway();
    let key = cluster.access_key();
    let args = args(&gateway.endpoint);
    let liar = cluster.add_node_as("d", &chaos(&args)).id.to_string();
    cluster.wait_nodes(|node| node["last_heartbeat_ms"].is_u64());
    match how {
        Upload::ReadBack => {
            upload(&cluster, &gateway, &key);
            // Audits can disqualify a liar and move its shards before the upload's end is
            // even seen; a node is audited only for shards the catalog places on it.
            let held = placed_on(&cluster, &liar, usize::MAX);
            let judged = entry(&cluster, &liar)["audits_failed"]
                .as_u64()
                .unwrap_or(0);
            assert!(
                held > 0 || judged > 0,
                "the liar received no shards to lie about"
            );
        }
        Upload::BucketOnly(segment_size) => create_bucket(&cluster, segment_size),
    }
    LiarCluster {
        cluster,
        gateway,
        key,
        liar,
    }
}

/// Six honest nodes in three organisations and one `lie`ing node in a fourth; objects
/// uploaded through the gateway; then the liar must be disqualified within the stated
/// number of its audits, its shards rebuilt elsewhere, and no read may return a wrong
/// byte at any point.
fn liar_is_caught(lie: Lie) {
    let LiarCluster {
        cluster,
        gateway,
        key,
        liar,
        ..
    } = liar_cluster(&[], Upload::ReadBack, |endpoint| match lie {
        Lie::DropsShards => vec!["--drop-after-receipt".into()],
        Lie::FlipsBytes => vec!["--flip-bytes".into()],
        Lie::AnswersLate => vec!["--late-audits".into(), "3000".into()],
        Lie::Refuses(code) => vec!["--refuse".into(), code.into()],
        // The strongest lazy node: it knows exactly which public objects its shards
        // belong to.
        Lie::RefetchesFromPublic => {
            let mut args: Vec<String> = [
                "--refetch-audits",
                "--k",
                "4",
                "--m",
                "2",
                "--segment-size",
                "1048576",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            for name in support::healing::object_names("mixed/") {
                args.push("--public-object".into());
                args.push(format!("{endpoint}/{BUCKET}/{name}"));
            }
            args
        }
    });

    let reader = Reader::start(&gateway.endpoint, &key);
    let started = Instant::now();
    wait_until("the liar is disqualified", || {
        entry(&cluster, &liar)["state"] == "disqualified"
    });
    let caught_after = started.elapsed();
    let view = entry(&cluster, &liar);
    let failed = view["audits_failed"].as_u64().unwrap();
    let bad_reads = view["bad_reads"].as_u64().unwrap();
    assert_eq!(view["audits_passed"], 0, "a liar passed an audit: {view}");
    assert!(view["score"].as_f64().unwrap() < 0.975, "{view}");
    // Every challenge of it failed, and nothing else judged it (a gateway's report only
    // asks for an audit): disqualified at the third audit, so within three rounds.
    assert_eq!(failed, FAILURES_TO_DISQUALIFY, "{view}");
    if matches!(lie, Lie::FlipsBytes) {
        // Readers may meet its flipped bytes before the third audit, or not at all: on a
        // loaded machine the audits can end before the upload's read-back, and then no
        // read reaches the liar (a disqualified node gets no read orders, and a report
        // about a shard moved since is no evidence). Either way no reader saw a flipped
        // byte, and every bad read the coordinator counted is one the gateway's
        // verification caught.
        let caught = gateway_metric(&gateway, "cairn_gateway_verification_failures_total");
        assert!(
            bad_reads <= caught,
            "{bad_reads} bad reads counted, {caught} caught by the gateway: {view}"
        );
        eprintln!(
            "flipping node: the gateway caught {caught} flipped reads{}",
            if caught == 0 {
                " (audits disqualified it before any reader reached its bytes)"
            } else {
                ""
            }
        );
    }
    if matches!(lie, Lie::AnswersLate | Lie::Refuses(_)) {
        // Each failure came after the challenge was missed and asked again twice: a
        // refusal is a miss, never a pass.
        let missed = audits_metric(&cluster, "missed");
        assert!(missed >= 2 * FAILURES_TO_DISQUALIFY, "missed {missed}");
    }
    eprintln!(
        "liar disqualified after {caught_after:?}: {failed} failed audits, {bad_reads} bad reads"
    );

    // Its shards count as lost and are rebuilt on honest nodes.
    full_margin(&cluster);
    wait_until("nothing placed on the liar", || {
        placed_on(&cluster, &liar, usize::MAX) == 0
    });
    objects("check", &gateway.endpoint, &key).unwrap();
    let passes = reader.finish().expect("a client received a wrong byte");
    assert!(passes >= 1, "the reader never finished a pass");
}

/// A counter from the gateway's `/metrics`.
fn gateway_metric(gateway: &GatewayProcess, name: &str) -> u64 {
    let body = ureq::get(&format!("{}/metrics", gateway.endpoint))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let prefix = format!("{name} ");
    body.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

/// `cairn_coordinator_audits_total{result}` from the leader's metrics.
fn audits_metric(cluster: &TestCluster, result: &str) -> u64 {
    let url = format!("{}/metrics", cluster.coordinator.url());
    let body = ureq::get(&url)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let prefix = format!("cairn_coordinator_audits_total{{result=\"{result}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in {body}"))
}

/// A node that silently loses a fifth of what it stores (`--drop-share 0.2`: each shard
/// whose keyed hash of its id falls below 0.2 is deleted right after its receipt is
/// signed, and still claimed) and serves the rest honestly. Nothing reads its shards
/// before the verdict, so audits alone find it: an audit of a dropped shard fails (the
/// node denies a shard it signed for) and that shard is rebuilt elsewhere at once; audits
/// of the kept ones pass. Failures close together (three in a row, or a few among passes)
/// bring its score under the line, typically within 14 audits and 40 at the 99th
/// percentile (ARCHITECTURE.md, "Reputation"), while the upload is still going: the test
/// watches the catalog from the first shard. Until the verdict only dropped shards leave
/// the node; after it, everything it held is rebuilt and every object reads back
/// byte-exact.
#[test]
fn a_node_that_silently_drops_a_fifth_of_its_shards_is_disqualified_and_repaired() {
    // 128 KiB segments: the dropper is offered a shard of ~180 segments.
    let caught = dropper_is_caught(0.2, "128KiB", "300", Duration::from_secs(60));
    assert!(caught.disqualified, "{caught:?}");
    // The 99 % bound is 40 audits; past 200 would be far beyond any run of the policy's
    // simulation (a test asserting a 99 % bound fails one run in a hundred).
    assert!(caught.audits <= 200, "{caught:?}");
}

/// A node that silently loses a twentieth of what it stores, the smallest loss the
/// stated bound covers (ARCHITECTURE.md, "Reputation"): it is offered a shard of some 700
/// segments (32 KiB each), about 35 of them lost, and is audited one challenge a round,
/// every 100 ms, from its first shard on.
/// Its failure rate is low enough that a run of passes can outlast its losses: each
/// failed audit rebuilds that shard elsewhere at once, so the losses can all be found and
/// repaired before the score crosses the line (in the policy's simulation, about one run
/// in five for a node holding 150 shards, fewer the more it holds). Either way nothing is lost: the test waits until the node is
/// disqualified or every shard it dropped has been found by an audit and rebuilt
/// elsewhere, and asserts that no shard it kept left it before a verdict, that honest
/// nodes failed nothing, and that every object reads back byte-exact.
#[test]
fn a_node_that_silently_drops_a_twentieth_of_its_shards_is_caught_and_every_loss_rebuilt() {
    let caught = dropper_is_caught(0.05, "32KiB", "100", Duration::from_secs(420));
    if caught.disqualified {
        // The 99 % bound is 230 audits while its losses outnumber the failures needed.
        assert!(caught.audits <= 1_500, "{caught:?}");
    } else {
        // Without a verdict, only because its losses were all found first.
        assert!(caught.dropped >= 1, "{caught:?}");
    }
}

/// How a dropper's run ended.
#[derive(Debug)]
struct Caught {
    /// Whether the node was disqualified (else every shard it dropped was found and
    /// rebuilt elsewhere without a verdict).
    disqualified: bool,
    /// Audits judged against it by then.
    audits: u64,
    /// Shards ever seen placed on it.
    placed: usize,
    /// Those of them it dropped.
    dropped: usize,
}

/// Runs a `--drop-share share` node in a cluster auditing every `round_ms`, with the
/// objects uploaded in `segment_size` segments while the catalog is watched, until the
/// node is disqualified or (the upload done) no shard it dropped is placed on it any
/// more, within `limit`. Asserts what holds in either case: only dropped shards left it
/// before a verdict, at least one audit failed, honest nodes failed none, nothing was
/// read from it (the audits alone judged), and in the end every segment is at full
/// margin, nothing it dropped (or, if disqualified, nothing at all) is placed on it, and
/// every object reads back byte-exact.
fn dropper_is_caught(
    share: f64,
    segment_size: &'static str,
    round_ms: &str,
    limit: Duration,
) -> Caught {
    let LiarCluster {
        cluster,
        gateway,
        key,
        liar,
    } = liar_cluster(
        // Rebalancing off: before the verdict only a failed audit moves a shard off it.
        // Small segments make a part's upload long on a loaded machine: its put orders
        // get the time to be committed (half the orphan delay).
        &[
            "--rebalance-threshold-permille",
            "0",
            "--audit-interval-ms",
            round_ms,
            "--orphan-delay-secs",
            "600",
        ],
        Upload::BucketOnly(segment_size),
        |_| vec!["--drop-share".into(), share.to_string()],
    );
    let uploading = {
        let (endpoint, key) = (gateway.endpoint.clone(), key.clone());
        std::thread::spawn(move || objects("put", &endpoint, &key))
    };

    // Every shard id seen placed on the node, and those that left it before its verdict.
    let catalog = CatalogReader::new(&cluster);
    let mut seen = std::collections::BTreeSet::new();
    let mut moved_before_verdict = std::collections::BTreeSet::new();
    let started = Instant::now();
    let disqualified = loop {
        let now = catalog.placed_ids(&liar);
        // Read after the placement: if not disqualified now, it was not when those
        // shards left it either (a verdict is never lifted).
        let state = entry(&cluster, &liar)["state"].clone();
        if state == "disqualified" {
            break true;
        }
        // A node taken for lost (silent too long) has its shards rebuilt too.
        assert!(
            state == "vetting" || state == "suspect",
            "the dropper's heartbeats lapsed: {state}"
        );
        moved_before_verdict.extend(seen.difference(&now).copied());
        seen.extend(now.iter().copied());
        if uploading.is_finished() && !now.iter().any(|id| drops_shard(id, share)) {
            break false;
        }
        assert!(
            started.elapsed() < limit,
            "after {limit:?} the dropper is neither disqualified nor rid of what it \
             dropped: {} of its {} shards were dropped, {} found so far; {}",
            seen.iter().filter(|id| drops_shard(id, share)).count(),
            seen.len(),
            moved_before_verdict.len(),
            entry(&cluster, &liar)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let caught_after = started.elapsed();
    let view = entry(&cluster, &liar);
    let kept: Vec<_> = moved_before_verdict
        .iter()
        .filter(|id| !drops_shard(id, share))
        .collect();
    assert!(
        kept.is_empty(),
        "shards the node kept were moved off it before its verdict: {kept:?}"
    );
    let failed = view["audits_failed"].as_u64().unwrap();
    let passed = view["audits_passed"].as_u64().unwrap();
    assert!(failed >= 1, "{view}");
    if disqualified {
        assert!(view["score"].as_f64().unwrap() < 0.975, "{view}");
        assert!(failed >= FAILURES_TO_DISQUALIFY, "{view}");
    }
    // Nothing read its shards: the audits alone judged it.
    assert_eq!(view["bad_reads"], 0, "{view}");
    // Every failure counted is the dropper's: the honest nodes failed none.
    for node in cluster.nodes_view() {
        if node["id"] != liar.as_str() {
            assert_eq!(node["audits_failed"], 0, "{node}");
        }
    }
    let caught = Caught {
        disqualified,
        audits: passed + failed,
        placed: seen.len(),
        dropped: seen.iter().filter(|id| drops_shard(id, share)).count(),
    };
    eprintln!(
        "dropper of {share}: {} {caught_after:?} into the run, after {} audits ({passed} \
         passed, {failed} failed); it had been placed {} shards, {} of them dropped; {} \
         dropped shards rebuilt elsewhere before any verdict",
        if disqualified {
            "disqualified"
        } else {
            "rid of every dropped shard"
        },
        caught.audits,
        caught.placed,
        caught.dropped,
        moved_before_verdict.len()
    );

    // The upload went on without it. A PUT whose segment was placed on the node just
    // before its verdict can fail (its commit then names a disqualified node); such an
    // object is written again, onto honest nodes.
    if let Err(err) = uploading.join().unwrap() {
        eprintln!("PUTs failed around the verdict, written again: {err}");
        objects("put", &gateway.endpoint, &key).unwrap();
    }
    // Its lost shards (all of its shards, if disqualified) are rebuilt on honest nodes;
    // every object reads back byte-exact.
    full_margin(&cluster);
    wait_until("nothing the dropper lost placed on it", || {
        catalog
            .placed_ids(&liar)
            .iter()
            .all(|id| !disqualified && !drops_shard(id, share))
    });
    objects("check", &gateway.endpoint, &key).unwrap();
    caught
}

/// Reads which shards the catalog places where, with one registered gateway key of the
/// test's own (so polling it registers nothing new).
struct CatalogReader {
    runtime: tokio::runtime::Runtime,
    client: cairn_client::coordinator::CoordinatorClient,
}

impl CatalogReader {
    fn new(cluster: &TestCluster) -> CatalogReader {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let client = runtime.block_on(async { cluster.gateway_client() });
        CatalogReader { runtime, client }
    }

    /// The ids of the shards the catalog places on `node`, over every object in the
    /// bucket.
    fn placed_ids(&self, node: &str) -> std::collections::BTreeSet<ShardId> {
        let request = GatewayRequest::List {
            bucket: BUCKET.into(),
            query: cairn_client::records::ListQuery {
                max: 1000,
                ..Default::default()
            },
        };
        let GatewayResponse::Listing(listing) =
            self.runtime.block_on(self.client.call(&request)).unwrap()
        else {
            panic!("no listing");
        };
        listing
            .objects
            .into_iter()
            .flat_map(|(_, object)| match object.body {
                ObjectBody::Inline(_) => Vec::new(),
                ObjectBody::Segments { segments, .. } => segments
                    .into_iter()
                    .flat_map(|segment| segment.shards)
                    .filter(|shard| shard.node.to_string() == node)
                    .map(|shard| shard.id)
                    .collect(),
            })
            .collect()
    }
}

#[test]
fn a_node_that_drops_shards_after_signing_receipts_is_disqualified_and_repaired() {
    liar_is_caught(Lie::DropsShards);
}

#[test]
fn a_node_that_serves_flipped_bytes_is_disqualified_and_no_reader_sees_them() {
    liar_is_caught(Lie::FlipsBytes);
}

#[test]
fn a_node_that_answers_audits_late_is_disqualified_after_containment() {
    liar_is_caught(Lie::AnswersLate);
}

#[test]
fn a_node_that_refuses_every_audit_as_busy_is_disqualified() {
    liar_is_caught(Lie::Refuses("busy"));
}

/// An order refused as expired may be the coordinator's clock: the audit is asked again at
/// once with a fresh order, and a node that refuses that one too has missed it.
#[test]
fn a_node_that_calls_every_audit_order_expired_is_disqualified() {
    liar_is_caught(Lie::Refuses("expired"));
}

/// A node that keeps every shard and answers every audit, but refuses every read as busy:
/// audits alone would find nothing wrong while no reader gets a byte from it. Each read
/// refusal a gateway reports is asked of the node again as a read, under a read order for a
/// key it has never seen, and a refused read is judged like a refused audit: the shard is
/// rebuilt on a node that serves it, and three such failures in a row disqualify the node.
/// Every read stays exact all along.
#[test]
fn a_node_that_answers_audits_but_refuses_every_read_is_judged_by_reads() {
    let LiarCluster {
        cluster,
        gateway,
        key,
        liar,
    } = liar_cluster(&[], Upload::ReadBack, |_| {
        vec!["--refuse-reads".into(), "busy".into()]
    });
    // The upload's read-back may already have moved some of its shards: the failed reads
    // asserted below are what proves it held any.
    let held = placed_on(&cluster, &liar, usize::MAX);

    // Readers fetch data shards (indices 0..4) only: each one the liar holds is refused,
    // reported, asked again as a read, refused again and rebuilt elsewhere.
    let reader = Reader::start(&gateway.endpoint, &key);
    wait_until("no data shard left on the liar", || {
        placed_on(&cluster, &liar, 4) == 0
    });
    let view = entry(&cluster, &liar);
    let failed = view["audits_failed"].as_u64().unwrap();
    assert!(
        failed >= 1,
        "data shards moved without a failed read: {view}"
    );
    // Each failure came after the read was refused and asked again twice.
    let missed = audits_metric(&cluster, "missed");
    assert!(missed >= 2 * failed, "missed {missed}, failed {failed}");
    if failed >= FAILURES_TO_DISQUALIFY {
        wait_until("the liar is disqualified", || {
            entry(&cluster, &liar)["state"] == "disqualified"
        });
    }
    eprintln!(
        "read-refusing node holding {held} shards: {} audits passed, {failed} failed, now {}",
        view["audits_passed"],
        entry(&cluster, &liar)["state"]
    );
    full_margin(&cluster);
    objects("check", &gateway.endpoint, &key).unwrap();
    let passes = reader.finish().expect("a client received a wrong byte");
    assert!(passes >= 1, "the reader never finished a pass");
}

#[test]
fn a_node_that_answers_audits_from_the_public_object_is_disqualified() {
    liar_is_caught(Lie::RefetchesFromPublic);
}

/// A failed audit condemns the copy, not only its node: with disqualification switched off
/// (and rebalancing, the only other mover), every shard the liar serves flipped is rebuilt
/// elsewhere once an audit of it fails, while the liar itself stays in the cluster.
#[test]
fn a_shard_that_fails_its_audit_is_rebuilt_without_waiting_for_disqualification() {
    let (cluster, gateway, key, liar) = flipper_cluster(AUDITS);
    // Audits run from the liar's first shard on, so by now some (or all) of its shards may
    // already be rebuilt elsewhere; the failed audits asserted below are what proves it
    // held shards to lie about, since only shards placed on a node are audited there.
    let held = placed_on(&cluster, &liar, usize::MAX);

    wait_until("nothing placed on the liar", || {
        placed_on(&cluster, &liar, usize::MAX) == 0
    });
    full_margin(&cluster);
    let view = entry(&cluster, &liar);
    assert_eq!(
        view["state"], "vetting",
        "the liar was judged, not removed: {view}"
    );
    let failed = view["audits_failed"].as_u64().unwrap();
    assert!(failed >= 1, "shards moved without a failed audit: {view}");
    eprintln!(
        "{held} shards still on the liar after the upload, all rebuilt away after {failed} \
         failed audits"
    );
    objects("check", &gateway.endpoint, &key).unwrap();
}

/// A copy a gateway reads bad is rebuilt too, not only its node judged: with audits,
/// disqualification and rebalancing out of the way, reading every object once moves every
/// data shard off a node that flips bytes (its parity shards are never read, so they stay).
/// A report about a shard the catalog does not place on the node named is ignored.
#[test]
fn a_shard_a_gateway_reads_bad_is_rebuilt_and_stray_reports_are_ignored() {
    // Audits every hour: none during the test. The upload read every object back once
    // through the gateway, every data shard (indices 0..4) among them.
    let (cluster, gateway, key, liar) = flipper_cluster(&["--audit-interval-ms", "3600000"]);
    wait_until("no data shard left on the liar", || {
        placed_on(&cluster, &liar, 4) == 0
    });
    full_margin(&cluster);
    let view = entry(&cluster, &liar);
    assert!(view["bad_reads"].as_u64().unwrap() >= 1, "{view}");
    assert_eq!(
        view["audits_failed"], 0,
        "audits were meant to be off: {view}"
    );
    assert_eq!(view["state"], "vetting", "{view}");
    objects("check", &gateway.endpoint, &key).unwrap();

    // A gateway's report naming a shard the node does not hold counts for nothing.
    let honest = cluster
        .nodes_view()
        .iter()
        .map(|node| node["id"].as_str().unwrap().to_string())
        .find(|id| *id != liar)
        .expect("an honest node");
    let (object, segments) = shard_nodes(&cluster)
        .into_iter()
        .find(|(_, segments)| !segments.is_empty())
        .expect("a segmented object");
    let not_on_honest = segments[0]
        .iter()
        .position(|node| node.to_string() != honest)
        .expect("a shard elsewhere");
    let stray = cairn_proto::ids::ShardId([0xee; 16]);
    let elsewhere = shard_id(&cluster, &object, not_on_honest);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = cluster.gateway_client();
        for shard in [stray, elsewhere] {
            let report = GatewayRequest::ReportShard {
                bucket: BUCKET.into(),
                key: object.clone(),
                node: honest.parse().unwrap(),
                shard,
                problem: "stray report".into(),
            };
            client.call(&report).await.unwrap();
        }
    });
    let view = entry(&cluster, &honest);
    assert_eq!(
        view["bad_reads"], 0,
        "a stray report was held against a node: {view}"
    );
}

/// Six honest nodes in three organisations and a `--flip-bytes` node in a fourth, the
/// coordinator run with `flags`, and the objects under `mixed/` uploaded (and read back)
/// through a gateway; returns the cluster, the gateway, its key and the liar's id.
/// Disqualification and rebalancing are off and nobody is vetted, so only what a test is
/// about moves shards.
fn flipper_cluster(flags: &[&str]) -> (TestCluster, GatewayProcess, (String, String), String) {
    let flags: Vec<&str> = flags
        .iter()
        .copied()
        .chain(["--vetting-audits", "1000000"])
        .chain(["--disqualify-below-permille", "0"])
        .chain(["--rebalance-threshold-permille", "0"])
        .collect();
    let mut cluster = fast_cluster(&["a", "a", "b", "b", "c", "c"], &flags);
    let gateway = cluster.start_gateway();
    let key = cluster.access_key();
    let liar = cluster
        .add_node_as("d", &chaos(&["--flip-bytes".into()]))
        .id
        .to_string();
    cluster.wait_nodes(|node| node["last_heartbeat_ms"].is_u64());
    upload(&cluster, &gateway, &key);
    (cluster, gateway, key, liar)
}

/// Shards with an index below `below` that the catalog places on `node`.
fn placed_on(cluster: &TestCluster, node: &str, below: usize) -> usize {
    shard_nodes(cluster)
        .iter()
        .flat_map(|(_, segments)| segments.iter().flat_map(|nodes| nodes.iter().take(below)))
        .filter(|id| id.to_string() == node)
        .count()
}

/// The id of shard `index` of the first segment of `object`.
fn shard_id(cluster: &TestCluster, object: &str, index: usize) -> cairn_proto::ids::ShardId {
    match cluster.object(BUCKET, object).map(|record| record.body) {
        Some(ObjectBody::Segments { segments, .. }) => segments[0].shards[index].id,
        other => panic!("{object} is not a segmented object: {other:?}"),
    }
}

#[test]
fn an_honest_node_on_a_slow_lossy_link_passes_audits_and_is_vetted() {
    let flags: Vec<&str> = AUDITS
        .iter()
        .copied()
        // Uploads to the slow node take long: give their put orders time to be committed.
        .chain(["--vetting-audits", "5", "--orphan-delay-secs", "600"])
        .collect();
    let mut cluster = fast_cluster(&["a", "a", "b", "b", "c", "c"], &flags);
    let gateway = cluster.start_gateway();
    let key = cluster.access_key();
    // 40 ms each way plus up to 20 ms of jitter, and one datagram in twenty lost, in both
    // directions.
    let link: Vec<String> = [
        "--honest",
        "--link-delay-ms",
        "40",
        "--link-jitter-ms",
        "20",
        "--link-drop-percent",
        "5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let slow = cluster.add_node_as("d", &chaos(&link)).id.to_string();
    cluster.wait_nodes(|node| node["last_heartbeat_ms"].is_u64());
    upload(&cluster, &gateway, &key);
    let held = shard_nodes(&cluster)
        .iter()
        .flat_map(|(_, segments)| segments.iter().flatten())
        .filter(|node| node.to_string() == slow)
        .count();
    assert!(held > 0, "the slow node received no shards");

    let reader = Reader::start(&gateway.endpoint, &key);
    wait_until("the slow node has passed 15 audits", || {
        entry(&cluster, &slow)["audits_passed"].as_u64().unwrap() >= 15
    });
    let view = entry(&cluster, &slow);
    eprintln!(
        "slow node after 15 passed audits: {view}; audits missed cluster-wide: {}",
        audits_metric(&cluster, "missed")
    );
    assert_eq!(
        view["state"], "active",
        "vetted by its passed audits: {view}"
    );
    assert!(
        view["score"].as_f64().unwrap() > 0.8,
        "an honest node lost standing to its link: {view}"
    );
    reader.finish().expect("a read failed");
}

#[test]
fn a_node_claiming_another_identity_or_organisation_is_refused() {
    let cluster = TestCluster::start(&["a"]);
    let honest = cluster.nodes[0].id;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // A heartbeat for the honest node, sent by another key: refused, whatever it says.
        let impostor = SecretKey::generate();
        let endpoint = client_endpoint("127.0.0.1:0".parse().unwrap(), &impostor).unwrap();
        let conn = connect(
            &endpoint,
            &impostor,
            cluster.coordinator.quic,
            &cluster.key,
            COORDINATOR_ALPN,
        )
        .await
        .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let heartbeat = Heartbeat {
            node: honest,
            listen: "127.0.0.1:9".into(),
            used_bytes: 0,
            capacity_bytes: 1 << 40,
            shard_count: 0,
            damaged: Vec::new(),
            version: "0".into(),
            org: "a".into(),
            site: "x".into(),
        };
        write_frame(&mut send, &CoordinatorRequest::Heartbeat(heartbeat))
            .await
            .unwrap();
        send.finish().unwrap();
        let answer: CoordinatorResponse = read_frame(&mut recv).await.unwrap();
        assert!(
            matches!(
                answer,
                CoordinatorResponse::Error {
                    code: ErrorCode::WrongNode | ErrorCode::NotFound,
                    ..
                }
            ),
            "{answer:?}"
        );

        // A server answering at some address as the honest node, with any other key:
        // gateways and the coordinator pin the node's key, so the handshake is refused.
        let server = server_endpoint(
            "127.0.0.1:0".parse().unwrap(),
            &impostor,
            &[NODE_ALPN],
            PeerPolicy::Any,
        )
        .unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move { while let Some(incoming) = server.accept().await { let _ = incoming.await; } });
        let gateway = SecretKey::generate();
        let client = client_endpoint("127.0.0.1:0".parse().unwrap(), &gateway).unwrap();
        let refused = connect(&client, &gateway, addr, &honest, NODE_ALPN).await;
        assert!(
            matches!(refused, Err(TransportError::WrongPeer { found, .. }) if found == impostor.public()),
            "{refused:?}"
        );
    });

    // An invitation bound to one organisation does not admit a node claiming another
    // (one operator cannot pass for several to collect shards past the per-org limit).
    let token = admin(&cluster.coordinator, &["invite", "--org", "uni-a"])
        .unwrap()
        .trim()
        .to_string();
    let dir = cluster.root.path().join("other-org");
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["node", "--data-dir", dir.join("data").to_str().unwrap()])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--org",
            "uni-b",
            "--join",
            &token,
        ])
        .env("CAIRN_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("organisation"), "{stderr}");
    assert_eq!(cluster.nodes_view().len(), 1, "nothing was registered");

    // The same invitation still admits a node of the invited organisation.
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["node", "--data-dir", dir.join("data2").to_str().unwrap()])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--org",
            "uni-a",
            "--join",
            &token,
        ])
        .env("CAIRN_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _node = Guard(child);
    wait_until("the invited organisation's node is registered", || {
        cluster.nodes_view().iter().any(|n| n["org"] == "uni-a")
    });
}

/// Kills the child when dropped, so a failed assertion leaves no process behind.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One request from a key the catalog does not know, on a fresh connection; the answer, or
/// `None` if the coordinator closed the connection without one.
async fn stranger_asks(
    cluster: &TestCluster,
    request: &CoordinatorRequest,
) -> Option<CoordinatorResponse> {
    let stranger = SecretKey::generate();
    let endpoint = client_endpoint("127.0.0.1:0".parse().unwrap(), &stranger).unwrap();
    let conn = connect(
        &endpoint,
        &stranger,
        cluster.coordinator.quic,
        &cluster.key,
        COORDINATOR_ALPN,
    )
    .await
    .ok()?;
    let (mut send, mut recv) = conn.open_bi().await.ok()?;
    cairn_proto::wire::write_frame_within(&mut send, request, 1 << 20)
        .await
        .ok()?;
    let _ = send.finish();
    read_frame(&mut recv).await.ok()
}

fn last_applied(cluster: &TestCluster) -> u64 {
    let status = admin(&cluster.coordinator, &["--json", "status"]).unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    status["last_applied"].as_u64().unwrap()
}

/// Anyone can reach the coordinator port. A join without a valid invitation, with fields
/// too long, or in a frame far larger than a join is refused before anything is proposed
/// to Raft (the applied log position does not move), and one address's attempts are
/// limited: past the allowance its connections are closed unanswered.
#[test]
fn a_stranger_s_joins_never_reach_the_raft_log_and_are_rate_limited() {
    let cluster = TestCluster::start(&["a"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let join = |org: String, site: String| {
        CoordinatorRequest::Join(cairn_proto::wire::JoinRequest {
            secret: [7; 32],
            listen: "127.0.0.1:9".into(),
            capacity_bytes: 1 << 60,
            org,
            site,
        })
    };
    let before = last_applied(&cluster);
    runtime.block_on(async {
        let refused = |answer: Option<CoordinatorResponse>, code: ErrorCode| match answer {
            Some(CoordinatorResponse::Error { code: got, .. }) => assert_eq!(got, code),
            other => panic!("expected a {code:?} refusal, got {other:?}"),
        };
        // No such invitation: refused without a proposal.
        refused(
            stranger_asks(&cluster, &join("a".into(), "x".into())).await,
            ErrorCode::Forbidden,
        );
        // An organisation name far past the limit.
        refused(
            stranger_asks(&cluster, &join("o".repeat(3000), "x".into())).await,
            ErrorCode::Malformed,
        );
        // A frame of 100 KiB from a stranger is not read.
        refused(
            stranger_asks(&cluster, &join("a".into(), "s".repeat(100 << 10))).await,
            ErrorCode::Malformed,
        );
        // A stranger may only join: a heartbeat from an unknown key is refused.
        let heartbeat = CoordinatorRequest::Leave;
        refused(
            stranger_asks(&cluster, &heartbeat).await,
            ErrorCode::NotFound,
        );
    });
    assert_eq!(
        last_applied(&cluster),
        before,
        "a stranger's request reached the Raft log"
    );
    runtime.block_on(async {
        let mut answered = 0;
        for _ in 0..80 {
            if stranger_asks(&cluster, &join("a".into(), "x".into()))
                .await
                .is_some()
            {
                answered += 1;
            }
        }
        assert!(
            answered < 80,
            "80 join attempts from one address in a few seconds were all answered"
        );
    });
    // Registered nodes are not held back by strangers on their address.
    let node = cluster.nodes[0].id.to_string();
    let since = cluster
        .nodes_view()
        .into_iter()
        .find(|n| n["id"] == node.as_str())
        .unwrap()["last_heartbeat_ms"]
        .as_u64()
        .unwrap();
    wait_until("the node heartbeats on", || {
        cluster
            .nodes_view()
            .into_iter()
            .find(|n| n["id"] == node.as_str())
            .and_then(|n| n["last_heartbeat_ms"].as_u64())
            .is_some_and(|ms| ms != since)
    });
}

/// One gateway's word disqualifies no one. A registered gateway reports shards of an honest
/// node as bad, each of them over and over: each shard counts once per gateway, and each
/// report makes the leader audit that shard on that node, which passes. The node keeps its
/// standing however many reports arrive.
#[test]
fn a_gateway_reporting_an_honest_node_cannot_get_it_disqualified() {
    let cluster = fast_cluster(&["a", "a", "b", "b", "c", "c"], AUDITS);
    let gateway = cluster.start_gateway();
    let key = cluster.access_key();
    upload(&cluster, &gateway, &key);
    let target = cluster.nodes[0].id;
    let mut reported = Vec::new();
    for name in support::healing::object_names("mixed/") {
        let Some(object) = cluster.object(BUCKET, &name) else {
            continue;
        };
        let ObjectBody::Segments { segments, .. } = &object.body else {
            continue;
        };
        for shard in segments.iter().flat_map(|s| &s.shards) {
            if shard.node == target && reported.len() < 4 {
                reported.push((name.clone(), shard.id));
            }
        }
    }
    assert_eq!(reported.len(), 4, "the node holds too few shards to report");
    let before = entry(&cluster, &target.to_string());
    let passed_before = before["audits_passed"].as_u64().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = cluster.gateway_client();
        for _ in 0..5 {
            for (name, shard) in &reported {
                let report = GatewayRequest::ReportShard {
                    bucket: BUCKET.into(),
                    key: name.clone(),
                    node: target,
                    shard: *shard,
                    problem: "claimed bad".into(),
                };
                client.call(&report).await.unwrap();
            }
        }
    });
    wait_until("the reported node is audited a few more times", || {
        entry(&cluster, &target.to_string())["audits_passed"].as_u64() >= Some(passed_before + 4)
    });
    let view = entry(&cluster, &target.to_string());
    assert_eq!(
        view["bad_reads"], 4,
        "reports counted once per shard: {view}"
    );
    assert_eq!(view["audits_failed"], 0, "{view}");
    assert_ne!(view["state"], "disqualified", "{view}");
    assert!(view["score"].as_f64().unwrap() > 0.99, "{view}");
}

/// A volunteer's clock ten minutes ahead (libfaketime under the node process): judged by
/// its own clock it would refuse every order as expired and be disqualified while holding
/// every byte. It checks orders against the coordinator's clock, which each heartbeat
/// answer carries, so it passes its audits and keeps its standing; its metrics show the
/// offset it measured. Skipped, saying so, where Debian's faketime is not installed.
#[test]
fn an_honest_node_whose_clock_is_ten_minutes_ahead_passes_its_audits() {
    let Some(faketime) = cairn_chaos_tests::cluster::faketime_library() else {
        eprintln!("SKIPPED: libfaketime is not installed (Debian: apt-get install faketime)");
        return;
    };
    let flags: Vec<&str> = AUDITS
        .iter()
        .copied()
        .chain(["--vetting-audits", "5"])
        .collect();
    let mut cluster = fast_cluster(&["a", "a", "b", "b", "c", "c"], &flags);
    let gateway = cluster.start_gateway();
    let key = cluster.access_key();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let command: Vec<PathBuf> = [
        "env".to_string(),
        format!("LD_PRELOAD={}", faketime.display()),
        "FAKETIME=+600".to_string(),
        "FAKETIME_DONT_FAKE_MONOTONIC=1".to_string(),
        "FAKETIME_DONT_RESET=1".to_string(),
        env!("CARGO_BIN_EXE_cairn").to_string(),
        "node".to_string(),
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    let skewed = cluster
        .add_node_with("d", &command, &format!("metrics_listen = \"{metrics}\""))
        .id
        .to_string();
    cluster.wait_nodes(|node| node["last_heartbeat_ms"].is_u64());
    upload(&cluster, &gateway, &key);
    wait_until("the skewed node has passed 10 audits", || {
        entry(&cluster, &skewed)["audits_passed"].as_u64().unwrap() >= 10
    });
    let view = entry(&cluster, &skewed);
    assert_eq!(view["audits_failed"], 0, "{view}");
    assert_eq!(view["state"], "active", "vetted by its audits: {view}");
    let body = ureq::get(&format!("http://{metrics}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let offset: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("cairn_node_clock_offset_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no clock offset in {body}"));
    assert!(
        (-610.0..=-590.0).contains(&offset),
        "the node measured {offset} s against the coordinator, not the 600 s it is ahead"
    );
    objects("check", &gateway.endpoint, &key).unwrap();
}
