//! Writes the seed corpora under `corpus/<target>/`, so short runs start from meaningful
//! inputs rather than from nothing:
//!
//! ```sh
//! cargo run --manifest-path chaos-tests/fuzz/Cargo.toml --example make_seeds
//! ```
//!
//! Every seed is made from real values (signed orders, real proofs, the Nix fixtures) and
//! checked here, so the fuzzers' invariants hold for all of them.

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use cairn_client::gateway_rpc::{GatewayRequest, NewBody, NewObject};
use cairn_coordinator::rpc::{MAX_RPC_FRAME, MAX_RPC_REQUEST, verify_segments};
use cairn_erasure::slice::SliceOutboard;
use cairn_fuzz::{
    FUZZ_PROFILE, InputBuilder, REAL_CACHE_KEY, REAL_SIGNED_FINGERPRINTS, coordinator_key,
    fill_pseudo_random, fuzz_node_keys, gateway_key, node_record, run_ready,
    sample_coordinator_requests, sample_gateway_requests, sample_gateway_responses,
    sample_join_shapes, sample_orders, sample_receipt, sample_requests, sample_responses,
};
use cairn_proto::wire::{self, MAX_FRAME, MAX_NODE_REQUEST};
use cairn_gateway::nix::keys::{TrustedKey, verify_narinfo};
use cairn_gateway::nix::narinfo::NarInfo;
use serde::Serialize;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    node_wire(&root.join("corpus/node_wire"));
    gateway_rpc(&root.join("corpus/gateway_rpc"));
    audit_proof(&root.join("corpus/audit_proof"));
    narinfo(
        &root.join("corpus/narinfo"),
        &root.join("../../s3-api/tests/fixtures/nix"),
    );
}

/// Empties (or makes) a seed folder.
fn fresh(dir: &Path) -> PathBuf {
    if dir.exists() {
        fs::remove_dir_all(dir).unwrap();
    }
    fs::create_dir_all(dir).unwrap();
    dir.to_path_buf()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes).unwrap();
}

fn framed<T: Serialize>(msg: &T) -> Vec<u8> {
    framed_within(msg, MAX_FRAME)
}

fn framed_within<T: Serialize>(msg: &T, max: u32) -> Vec<u8> {
    let mut out = Vec::new();
    run_ready(wire::write_frame_within(&mut out, msg, max)).unwrap();
    out
}

/// `prefix` as a frame's length, then `body`.
fn prefixed(prefix: u32, body: &[u8]) -> Vec<u8> {
    let mut out = prefix.to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn node_wire(dir: &Path) {
    let dir = fresh(dir);
    let names = [
        "put",
        "get-range",
        "get-all",
        "audit",
        "delete",
        "inventory",
    ];
    for (name, request) in names.iter().zip(sample_requests()) {
        write(&dir, &format!("request-{name}"), &framed(&request));
    }
    let names = ["stored", "shard", "audit", "deleted", "inventory", "error"];
    for (name, response) in names.iter().zip(sample_responses()) {
        write(&dir, &format!("response-{name}"), &framed(&response));
    }
    let names = ["heartbeat", "join", "leave"];
    for (name, request) in names.iter().zip(sample_coordinator_requests()) {
        write(&dir, &format!("coordinator-{name}"), &framed(&request));
    }
    for (name, request) in sample_join_shapes() {
        write(&dir, &format!("coordinator-{name}"), &framed(&request));
    }
    for (i, order) in sample_orders().iter().enumerate() {
        write(
            &dir,
            &format!("order-{i}"),
            &postcard::to_allocvec(order).unwrap(),
        );
    }
    write(
        &dir,
        "receipt",
        &postcard::to_allocvec(&sample_receipt()).unwrap(),
    );
    // Length prefixes a hostile peer might send: 4 GiB, one byte over the limit, and the
    // full limit with a few bytes behind it.
    write(&dir, "prefix-4gib", &[0xff; 4]);
    let mut over = (MAX_FRAME + 1).to_be_bytes().to_vec();
    over.extend_from_slice(b"abc");
    write(&dir, "prefix-over-limit", &over);
    let mut short = MAX_FRAME.to_be_bytes().to_vec();
    short.extend_from_slice(&[0; 10]);
    write(&dir, "prefix-limit-short", &short);
    // One byte over what a node reads a request under, and over a stranger's join.
    write(
        &dir,
        "prefix-over-node-request",
        &prefixed(MAX_NODE_REQUEST + 1, b"abc"),
    );
    write(&dir, "prefix-over-join", &prefixed((4 << 10) + 1, b"abc"));
}

fn gateway_rpc(dir: &Path) {
    let dir = fresh(dir);
    for (name, request) in sample_gateway_requests() {
        // The commits among the seeds carry proof the coordinator accepts, so the target's
        // checks of accepted proof start from inputs that reach them.
        let segments = match &request {
            GatewayRequest::Put {
                object:
                    NewObject {
                        body: NewBody::Segments(segments),
                        ..
                    },
                ..
            }
            | GatewayRequest::PutPart { segments, .. } => Some(segments),
            _ => None,
        };
        if let Some(segments) = segments {
            let nodes = fuzz_node_keys().map(|key| key.public());
            verify_segments(
                &coordinator_key().public(),
                &gateway_key().public(),
                FUZZ_PROFILE,
                segments,
                |id| nodes.contains(id).then(|| node_record(*id)),
            )
            .unwrap();
        }
        write(
            &dir,
            &format!("request-{name}"),
            &framed_within(&request, MAX_RPC_REQUEST),
        );
    }
    for (name, response) in sample_gateway_responses() {
        write(
            &dir,
            &format!("response-{name}"),
            &framed_within(&response, MAX_RPC_FRAME),
        );
    }
    // A stranger's 16 MiB frame (once read whole before the sender was checked), one byte
    // over a request, and 4 GiB.
    write(
        &dir,
        "prefix-16mib-short",
        &prefixed(MAX_RPC_FRAME, &[0; 10]),
    );
    write(
        &dir,
        "prefix-over-request",
        &prefixed(MAX_RPC_REQUEST + 1, b"abc"),
    );
    write(&dir, "prefix-4gib", &[0xff; 4]);
}

/// One structured input for `audit_proof`: mode, size class and number, content seed,
/// range class and numbers, then changes of `(op, x, y, v)`.
fn structured(size: (u8, u32), range: (u8, u64, u64), ops: &[(u8, u32, u32, u8)]) -> Vec<u8> {
    let mut b = InputBuilder::default()
        .u8(0)
        .u8(size.0)
        .u32(size.1)
        .u64(0x5eed)
        .u8(range.0)
        .u64(range.1)
        .u64(range.2)
        .u8(ops.len() as u8);
    for &(op, x, y, v) in ops {
        b = b.u8(op).u32(x).u32(y).u8(v);
    }
    b.0
}

fn audit_proof(dir: &Path) {
    let dir = fresh(dir);
    // 101 bytes, a few of them.
    write(&dir, "tiny", &structured((0, 100), (0, 7, 9), &[]));
    // 32769 bytes: two chunk groups and one byte; the whole shard.
    let edge = (65 << 8) | 1;
    write(&dir, "group-edge", &structured((1, edge), (3, 0, 0), &[]));
    // 256 KiB, whole chunk groups in the middle.
    write(&dir, "large", &structured((3, 255), (2, 3, 4), &[]));
    write(&dir, "empty", &structured((4, 0), (0, 0, 0), &[]));
    write(
        &dir,
        "flipped",
        &structured((2, 100_000), (1, 20_000, 30_000), &[(0, 500, 0, 1)]),
    );
    write(
        &dir,
        "truncated",
        &structured((2, 100_000), (1, 20_000, 30_000), &[(1, 1000, 0, 0)]),
    );
    write(
        &dir,
        "other-range",
        &structured((3, 100), (0, 17_000, 5), &[(8, 40_000, 3, 0)]),
    );
    write(
        &dir,
        "other-size",
        &structured((1, edge), (0, 100, 5), &[(7, 0, 0, 0)]),
    );
    write(
        &dir,
        "rotten",
        &structured((3, 100), (2, 1, 1), &[(9, 20_000, 0, 0x80)]),
    );

    // Raw mode: a genuine proof's bytes against a root no shard was hashed to.
    let mut shard = vec![0u8; 40_000];
    fill_pseudo_random(&mut shard, 1);
    let proof = SliceOutboard::compute(&shard)
        .prove(&shard[..], 20_000..20_100)
        .unwrap();
    let mut root = [0u8; 32];
    fill_pseudo_random(&mut root, 2);
    let raw = InputBuilder::default()
        .u8(7)
        .raw(&root)
        .u8(0)
        .u32(39_999)
        .u64(20_000)
        .u64(99)
        .raw(proof.as_bytes());
    write(&dir, "raw", &raw.0);
}

fn narinfo(dir: &Path, fixtures: &Path) {
    let dir = fresh(dir);
    let trusted = [TrustedKey::parse(REAL_CACHE_KEY).unwrap()];
    let accept = |text: &str| {
        let info = NarInfo::parse(text.as_bytes()).unwrap();
        assert!(REAL_SIGNED_FINGERPRINTS.contains(&info.fingerprint().as_str()));
        let name = format!("{}.narinfo", info.hash_part());
        verify_narinfo(&name, text.as_bytes(), &trusted).unwrap();
        info
    };

    // The real narinfos as Nix wrote them (never one signed by the fuzz key: the target
    // treats any narinfo it accepts under that key as a forgery).
    let real = |cache: &str, hash: &str| {
        fs::read_to_string(fixtures.join(cache).join(format!("{hash}.narinfo"))).unwrap()
    };
    let top = real("cache-xz", "6z3qjw504hxpywcwkywwwyz89mw81xqh");
    let info = accept(&top);
    write(&dir, "xz-with-references", top.as_bytes());
    let b = real("cache-none", "rhsy82qv90a0kf5gzylzb3v0yhlal014");
    accept(&b);
    write(&dir, "none", b.as_bytes());
    let c = real("cache-zstd", "j3h4iwwi8aa5hnvdv707594xmjdc8adk");
    accept(&c);
    write(&dir, "zstd", c.as_bytes());

    // The same, still validly signed: other hash spellings (the fingerprint normalises
    // them), a deriver, a field Nix does not know.
    let b64 = base64::engine::general_purpose::STANDARD.encode(info.nar_hash);
    let hex: String = info
        .file_hash
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let respelled: String = top
        .lines()
        .map(|line| match line.split_once(": ") {
            Some(("NarHash", _)) => format!("NarHash: sha256-{b64}\n"),
            Some(("FileHash", _)) => format!("FileHash: sha256:{hex}\n"),
            Some(("CA", _)) => format!(
                "{line}\nDeriver: 6z3qjw504hxpywcwkywwwyz89mw81xqh-a.txt.drv\nProvenance: x\n"
            ),
            _ => format!("{line}\n"),
        })
        .collect();
    assert_eq!(accept(&respelled).nar_hash, info.nar_hash);
    write(&dir, "respelled", respelled.as_bytes());

    // Unsigned and minimal: parses, refused for want of a signature.
    let minimal = "StorePath: /nix/store/rhsy82qv90a0kf5gzylzb3v0yhlal014-b.txt\n\
                   URL: nar/x.nar\n\
                   NarHash: sha256:080am6dna3a5brqdr71fs7xvvlb3naxq98a33a2vyrxdldhq42f3\n\
                   NarSize: 120\n";
    NarInfo::parse(minimal.as_bytes()).unwrap();
    write(&dir, "minimal-unsigned", minimal.as_bytes());
}
