//! What the fuzz targets share: the fixed keys they verify against, the sample messages the
//! seed corpora are made of, the checks every framed message must pass, a reader for
//! structured inputs, and an allocator that turns one absurd allocation into a crash
//! libFuzzer reports (with or without a sanitizer).
//!
//! `examples/make_seeds.rs` writes the seed corpora from the samples here; the targets are in
//! `fuzz_targets/`. See docs/fuzzing.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Debug;
use std::future::Future;
use std::io::Write as _;
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd as _;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use cairn_client::gateway_rpc::{
    GatewayRequest, GatewayResponse, NewBody, NewObject, NewSegment, PlacedShard, ReadOrders,
    RepairTicket, RpcCode, StoredShard,
};
use cairn_client::records::{ObjectHeaders, RequestId, ShardRecord};
use cairn_coordinator::catalog::model::{ErasureProfile, NodeRecord, NodeState};
use cairn_erasure::{Codec, ShardRoot};
use cairn_proto::identity::{NodeId, PublicKey, SecretKey};
use cairn_proto::ids::ShardId;
use cairn_proto::order::{Action, Order, Receipt, SignedOrder, SignedReceipt};
use cairn_proto::wire::{
    self, CoordinatorRequest, ErrorCode, Heartbeat, JoinRequest, NodeRequest, NodeResponse,
    WireError,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

// ---------------------------------------------------------------------------------------
// Allocation cap

/// The process's allocator: the system one, refusing (by aborting, which libFuzzer records
/// as a crash with its input) any single allocation over [`limit_allocations`]'s limit,
/// and remembering the largest allocation since [`reset_peak`].
pub struct CappedAlloc;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Makes any single allocation over `bytes` a crash.
pub fn limit_allocations(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
}

/// Forgets the largest allocation seen so far.
pub fn reset_peak() {
    PEAK.store(0, Ordering::Relaxed);
}

/// The largest single allocation (or reallocation target) since [`reset_peak`].
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

#[inline]
fn note(size: usize) {
    PEAK.fetch_max(size, Ordering::Relaxed);
    let limit = LIMIT.load(Ordering::Relaxed);
    if size > limit {
        too_big(size, limit);
    }
}

/// Says what happened on stderr without allocating, then aborts.
#[cold]
fn too_big(size: usize, limit: usize) -> ! {
    let mut buf = [0u8; 128];
    let mut at = 0;
    for part in [
        Part::Text(b"cairn-fuzz: one allocation of "),
        Part::Num(size),
        Part::Text(b" bytes, over the limit of "),
        Part::Num(limit),
        Part::Text(b"\n"),
    ] {
        at += part.write(&mut buf[at..]);
    }
    // SAFETY: fd 2 is stderr, open for the whole process; ManuallyDrop never closes it.
    let mut stderr = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(2) });
    let _ = stderr.write_all(&buf[..at]);
    std::process::abort();
}

enum Part {
    Text(&'static [u8]),
    Num(usize),
}

impl Part {
    fn write(&self, out: &mut [u8]) -> usize {
        match self {
            Part::Text(t) => {
                let n = t.len().min(out.len());
                out[..n].copy_from_slice(&t[..n]);
                n
            }
            Part::Num(v) => {
                let mut digits = [0u8; 20];
                let mut i = digits.len();
                let mut v = *v;
                loop {
                    i -= 1;
                    digits[i] = b'0' + (v % 10) as u8;
                    v /= 10;
                    if v == 0 {
                        break;
                    }
                }
                let n = (digits.len() - i).min(out.len());
                out[..n].copy_from_slice(&digits[i..i + n]);
                n
            }
        }
    }
}

// SAFETY: forwards every call to `System` unchanged; only looks at the requested sizes.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

// ---------------------------------------------------------------------------------------
// Driving async readers over in-memory bytes

/// Runs a future that never waits (an async read from a byte slice, a write into a `Vec`)
/// to its end. Panics if it returns `Pending`, which such a future must not.
pub fn run_ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("an in-memory read or write returned Pending"),
    }
}

// ---------------------------------------------------------------------------------------
// Framing

/// What `read_frame` reserves before a body arrives (`INITIAL_READ_BUF` in wire.rs).
pub const INITIAL_READ_BUF: usize = 64 * 1024;

/// The largest single allocation a frame of up to 1 MiB may cost (the body's buffer, grown
/// by doubling, or serde's preallocation, capped at 1 MiB); a longer frame may cost twice
/// its length.
pub const FRAME_ALLOC_CAP: usize = 2 << 20;

/// Reads `data` as one frame of `T` under the size limit `max`, as a peer reading from
/// this channel would, and checks the framing rules; `check` sees a decoded message.
///
/// - a length prefix over `max` is refused as `TooLarge` after reading only the prefix,
///   without allocating anything;
/// - a frame shorter than its prefix says is `Truncated`, having allocated no more than
///   [`INITIAL_READ_BUF`] or twice the bytes actually sent;
/// - no frame costs a single allocation over [`FRAME_ALLOC_CAP`] or twice its length;
/// - a decoded frame consumed exactly its prefix and body, and re-encodes (under the same
///   limit) to a frame no longer than it came that decodes to the same message.
pub fn check_frame<T>(data: &[u8], max: u32, check: impl Fn(&T))
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    let mut reader = data;
    reset_peak();
    let result = run_ready(wire::read_frame_within::<_, T>(&mut reader, max));
    let allocated = peak();
    let consumed = data.len() - reader.len();

    let Some(header) = data.first_chunk::<4>() else {
        match result {
            Err(WireError::Closed) if data.is_empty() => {}
            Err(WireError::Truncated) if !data.is_empty() => {}
            other => panic!("{} bytes, no full length prefix: {other:?}", data.len()),
        }
        return;
    };
    let len = u32::from_be_bytes(*header);
    if len > max {
        assert!(
            matches!(result, Err(WireError::TooLarge { len: l }) if l == u64::from(len)),
            "prefix {len} over the {max}-byte limit: {result:?}"
        );
        assert_eq!(consumed, 4, "read past a refused prefix");
        assert_eq!(allocated, 0, "allocated for a frame it refuses");
        return;
    }
    let len = len as usize;
    let sent = data.len() - 4;
    if sent < len {
        assert!(
            matches!(result, Err(WireError::Truncated)),
            "{sent} of {len} bytes: {result:?}"
        );
        assert!(
            allocated <= INITIAL_READ_BUF.max(2 * sent + 64),
            "a {len}-byte prefix with {sent} bytes sent made a {allocated}-byte allocation"
        );
        return;
    }
    assert_eq!(
        consumed,
        4 + len,
        "a frame must consume its prefix and body"
    );
    assert!(
        allocated <= FRAME_ALLOC_CAP.max(2 * len),
        "a {len}-byte frame made a {allocated}-byte allocation"
    );
    let msg = match result {
        Ok(msg) => msg,
        Err(WireError::Malformed(_)) => return,
        Err(other) => panic!("a complete {len}-byte frame failed with {other:?}"),
    };

    let mut again = Vec::new();
    run_ready(wire::write_frame_within(&mut again, &msg, max))
        .unwrap_or_else(|e| panic!("decoded {msg:?} does not re-encode: {e}"));
    assert!(again.len() <= 4 + len, "re-encoding grew the frame");
    let mut reader = &again[..];
    let decoded: T = run_ready(wire::read_frame_within(&mut reader, max))
        .unwrap_or_else(|e| panic!("re-encoded {msg:?} does not decode: {e}"));
    assert_eq!(decoded, msg, "re-encoding changed the message");
    assert!(reader.is_empty());

    check(&msg);
}

// ---------------------------------------------------------------------------------------
// Structured input

/// Reads fixed-size little-endian numbers from the front of a fuzz input; past its end every
/// number is 0, so any input is a complete one.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// The next `N` bytes (zero-filled past the end).
    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        out
    }

    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }

    /// The next 4 bytes, little-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }

    /// The next 8 bytes, little-endian.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }

    /// Everything not read yet.
    pub fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// Writes what [`Input`] reads, for making seeds.
#[derive(Default)]
pub struct InputBuilder(pub Vec<u8>);

impl InputBuilder {
    /// Appends a byte.
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }

    /// Appends 4 bytes, little-endian.
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends 8 bytes, little-endian.
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends raw bytes.
    pub fn raw(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
}

/// Fills `out` with a cheap deterministic pseudo-random stream (splitmix64) from `seed`.
pub fn fill_pseudo_random(out: &mut [u8], seed: u64) {
    let mut state = seed;
    for chunk in out.chunks_mut(8) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
}

// ---------------------------------------------------------------------------------------
// Fixed keys and sample messages

/// The coordinator key `node_wire` verifies orders against.
pub fn coordinator_key() -> SecretKey {
    SecretKey::from_seed([0xc0; 32])
}

/// The node the sample orders are for, and that signs the sample receipts.
pub fn node_key() -> SecretKey {
    SecretKey::from_seed([0x0d; 32])
}

/// The client the sample orders are issued to.
pub fn client_key() -> PublicKey {
    SecretKey::from_seed([0xc1; 32]).public()
}

/// An order of each action, signed by [`coordinator_key`].
pub fn sample_orders() -> Vec<SignedOrder> {
    let shard = ShardId([0x5a; 16]);
    let root = ShardRoot::of(b"a shard");
    let actions = [
        Action::Put {
            shard,
            root,
            size: 7,
        },
        Action::Get {
            shard,
            root,
            size: 7,
        },
        Action::Audit {
            shard,
            root,
            size: 1 << 20,
        },
        Action::Delete { shard },
        Action::Inventory,
    ];
    let coordinator = coordinator_key();
    actions
        .into_iter()
        .enumerate()
        .map(|(i, action)| {
            let order = Order {
                node: node_key().public(),
                client: client_key(),
                serial: 1000 + i as u64,
                expires_at: 1_800_000_000,
                action,
            };
            SignedOrder::sign(order, &coordinator)
        })
        .collect()
}

/// A receipt signed by [`node_key`].
pub fn sample_receipt() -> SignedReceipt {
    let receipt = Receipt {
        node: node_key().public(),
        shard: ShardId([0x5a; 16]),
        root: ShardRoot::of(b"a shard"),
        size: 7,
        serial: 1000,
        stored_at: 1_700_000_000,
    };
    SignedReceipt::sign(receipt, &node_key())
}

/// One request of each kind.
pub fn sample_requests() -> Vec<NodeRequest> {
    let orders = sample_orders();
    vec![
        NodeRequest::PutShard {
            order: orders[0].clone(),
        },
        NodeRequest::GetShard {
            order: orders[1].clone(),
            range: Some(3..5),
        },
        NodeRequest::GetShard {
            order: orders[1].clone(),
            range: None,
        },
        NodeRequest::Audit {
            order: orders[2].clone(),
            ranges: vec![0..16384, 500_000..500_100],
        },
        NodeRequest::DeleteShard {
            order: orders[3].clone(),
        },
        NodeRequest::Inventory {
            order: orders[4].clone(),
        },
    ]
}

/// One response of each kind.
pub fn sample_responses() -> Vec<NodeResponse> {
    vec![
        NodeResponse::Stored {
            receipt: sample_receipt(),
        },
        NodeResponse::Shard {
            range: 3..5,
            proof_len: 2,
        },
        NodeResponse::Audit {
            proofs: vec![vec![1, 2, 3], Vec::new()],
        },
        NodeResponse::Deleted { existed: true },
        NodeResponse::Inventory {
            shards: vec![ShardId([1; 16]), ShardId([2; 16])],
            more: true,
        },
        NodeResponse::Error {
            code: ErrorCode::Busy,
            message: "try later".into(),
        },
    ]
}

/// One coordinator request of each kind.
pub fn sample_coordinator_requests() -> Vec<CoordinatorRequest> {
    vec![
        CoordinatorRequest::Heartbeat(Heartbeat {
            node: node_key().public(),
            listen: "127.0.0.1:7000".into(),
            used_bytes: 10,
            capacity_bytes: 1 << 30,
            shard_count: 1,
            damaged: vec![ShardId([3; 16])],
            version: "0.1.0".into(),
            org: "org".into(),
            site: "site".into(),
        }),
        CoordinatorRequest::Join(JoinRequest {
            secret: [9; 32],
            listen: "127.0.0.1:7001".into(),
            capacity_bytes: 1 << 30,
            org: "org".into(),
            site: "site".into(),
        }),
        CoordinatorRequest::Leave,
    ]
}

/// Joins and heartbeats whose fields take the shapes a stranger might send: empty, at
/// and one past the coordinator's caps (64 characters for an organisation or site, 255 for
/// an address), with spaces, control or non-ASCII characters, without a port, the largest
/// capacity, and a heartbeat listing many damaged shards.
pub fn sample_join_shapes() -> Vec<(&'static str, CoordinatorRequest)> {
    let join = |listen: &str, org: &str, site: &str, capacity_bytes: u64| {
        CoordinatorRequest::Join(JoinRequest {
            secret: [0x42; 32],
            listen: listen.into(),
            capacity_bytes,
            org: org.into(),
            site: site.into(),
        })
    };
    let longest = "o".repeat(64);
    let too_long = "o".repeat(65);
    let long_host = format!("{}:7000", "h".repeat(250));
    vec![
        ("join-empty-fields", join("", "", "", 0)),
        (
            "join-longest-names",
            join("10.0.0.1:7000", &longest, &longest, 1),
        ),
        (
            "join-names-one-too-long",
            join("10.0.0.1:7000", &too_long, "s", 1),
        ),
        ("join-space-in-org", join("10.0.0.1:7000", "my org", "s", 1)),
        (
            "join-control-in-site",
            join("10.0.0.1:7000", "org", "s\u{7}\n", 1),
        ),
        ("join-non-ascii-org", join("10.0.0.1:7000", "orgé", "s", 1)),
        ("join-no-port", join("10.0.0.1", "org", "s", 1)),
        ("join-address-too-long", join(&long_host, "org", "s", 1)),
        (
            "join-ipv6-max-capacity",
            join("[::1]:7000", "org", "s", u64::MAX),
        ),
        (
            "heartbeat-many-damaged",
            CoordinatorRequest::Heartbeat(Heartbeat {
                node: node_key().public(),
                listen: "127.0.0.1:7000".into(),
                used_bytes: u64::MAX,
                capacity_bytes: 0,
                shard_count: u64::MAX,
                damaged: (0..100u128).map(|i| ShardId(i.to_be_bytes())).collect(),
                version: String::new(),
                org: too_long,
                site: String::new(),
            }),
        ),
    ]
}

// ---------------------------------------------------------------------------------------
// Gateway RPC

/// The gateway the sample put orders are issued to (the peer of the gateway RPC).
pub fn gateway_key() -> SecretKey {
    SecretKey::from_seed([0x9a; 32])
}

/// The code of the bucket `gateway_rpc` checks commits against: 2 + 1 in 1 MiB segments,
/// so a valid segment needs three distinct nodes.
pub const FUZZ_PROFILE: ErasureProfile = ErasureProfile {
    k: 2,
    m: 1,
    segment_size: 1 << 20,
};

/// The nodes a commit may name: [`node_key`] and two more.
pub fn fuzz_node_keys() -> [SecretKey; 3] {
    [
        node_key(),
        SecretKey::from_seed([0x0e; 32]),
        SecretKey::from_seed([0x0f; 32]),
    ]
}

/// The catalog record of a node `gateway_rpc` knows (active, so it may hold shards).
pub fn node_record(id: NodeId) -> NodeRecord {
    NodeRecord {
        id,
        addr: "127.0.0.1:7000".into(),
        org: "org".into(),
        site: "site".into(),
        capacity: 1 << 30,
        state: NodeState::Active,
        joined_ms: 1_700_000_000_000,
        state_since_ms: 1_700_000_000_000,
        vetted: true,
        reputation: Default::default(),
    }
}

/// Bytes of object data in the sample segment.
pub const SAMPLE_SEGMENT_LEN: u64 = 1000;

/// One stored shard: a put order signed by [`coordinator_key`] for [`gateway_key`] and the
/// receipt `node` signed for it.
pub fn stored_shard(node: &SecretKey, shard: ShardId, root: ShardRoot, size: u64) -> StoredShard {
    let serial = u64::from_be_bytes(shard.0[..8].try_into().unwrap_or_default());
    let order = SignedOrder::sign(
        Order {
            node: node.public(),
            client: gateway_key().public(),
            serial,
            expires_at: 1_800_000_000,
            action: Action::Put { shard, root, size },
        },
        &coordinator_key(),
    );
    let receipt = SignedReceipt::sign(
        Receipt {
            node: node.public(),
            shard,
            root,
            size,
            serial,
            stored_at: 1_700_000_000,
        },
        node,
    );
    StoredShard { order, receipt }
}

/// A segment of [`SAMPLE_SEGMENT_LEN`] bytes in the [`FUZZ_PROFILE`] code, one shard on
/// each of [`fuzz_node_keys`], with genuine orders and receipts: a proof a coordinator
/// accepts.
pub fn sample_segment() -> NewSegment {
    let codec = Codec::new(usize::from(FUZZ_PROFILE.k), usize::from(FUZZ_PROFILE.m))
        .unwrap_or_else(|err| panic!("the fuzz code is unusable: {err}"));
    let size = codec.shard_len(SAMPLE_SEGMENT_LEN);
    let shards = fuzz_node_keys()
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let shard = ShardId([0x60 + i as u8; 16]);
            let root = ShardRoot::of(&[i as u8]);
            stored_shard(node, shard, root, size)
        })
        .collect();
    NewSegment {
        len: SAMPLE_SEGMENT_LEN,
        shards,
        mask: None,
    }
}

/// Gateway requests as a gateway sends them, one of each shape worth starting from, and
/// one it must not send (a `Once` inside a `Once`), with a name for each seed.
pub fn sample_gateway_requests() -> Vec<(&'static str, GatewayRequest)> {
    let segment = sample_segment();
    let put = |body: NewBody| GatewayRequest::Put {
        bucket: "cache".into(),
        key: "nar/0a1b.nar.xz".into(),
        object: NewObject {
            size: SAMPLE_SEGMENT_LEN,
            etag: "\"0123456789abcdef0123456789abcdef\"".into(),
            headers: ObjectHeaders {
                content_type: Some("application/x-nix-nar".into()),
                content_encoding: None,
                cache_control: None,
                user_metadata: vec![("a".into(), "b".into())],
                expires: None,
            },
            body,
            acl: Default::default(),
            checksum: None,
        },
        condition: None,
    };
    let put_segments = put(NewBody::Segments(vec![segment.clone()]));
    vec![
        ("ping", GatewayRequest::Ping),
        ("list-buckets", GatewayRequest::ListBuckets),
        (
            "access-key",
            GatewayRequest::AccessKey { id: "AKIA0".into() },
        ),
        ("mask-key", GatewayRequest::MaskKey),
        (
            "place",
            GatewayRequest::Place {
                bucket: "cache".into(),
                shard_size: 512,
                roots: (0..3u8).map(|i| ShardRoot::of(&[i])).collect(),
                avoid: vec![node_key().public()],
            },
        ),
        (
            "put-inline",
            put(NewBody::Inline(b"StorePath: /nix/store/x".to_vec())),
        ),
        ("put-segments", put_segments.clone()),
        (
            "once-put",
            GatewayRequest::Once {
                id: RequestId([7; 16]),
                request: Box::new(put_segments),
            },
        ),
        (
            "once-once-ping",
            GatewayRequest::Once {
                id: RequestId([8; 16]),
                request: Box::new(GatewayRequest::Once {
                    id: RequestId([9; 16]),
                    request: Box::new(GatewayRequest::Ping),
                }),
            },
        ),
        (
            "put-part",
            GatewayRequest::PutPart {
                upload: "0123abcd".into(),
                number: 1,
                size: SAMPLE_SEGMENT_LEN,
                etag: "\"00\"".into(),
                segments: vec![segment.clone()],
                checksum: None,
            },
        ),
        (
            "repair-done",
            GatewayRequest::RepairDone {
                ticket: RepairTicket {
                    bucket: "cache".into(),
                    key: "nar/0a1b.nar.xz".into(),
                    part: None,
                    etag: "\"00\"".into(),
                    segment: 0,
                    reason: cairn_client::records::MoveReason::Repair,
                    replaced: vec![(2, ShardId([0x62; 16]))],
                },
                stored: vec![(2, segment.shards[2].clone())],
            },
        ),
        (
            "report-shard",
            GatewayRequest::ReportShard {
                bucket: "cache".into(),
                key: "nar/0a1b.nar.xz".into(),
                node: node_key().public(),
                shard: ShardId([0x60; 16]),
                problem: "root mismatch".into(),
            },
        ),
        (
            "read-orders",
            GatewayRequest::ReadOrders {
                bucket: "cache".into(),
                key: "nar/0a1b.nar.xz".into(),
                version: cairn_client::records::ObjectVersion([3; 16]),
                from: 16,
                count: 16,
                range: Some(1 << 30..(1 << 30) + 4096),
            },
        ),
    ]
}

/// Coordinator answers a gateway reads, with a name for each seed.
pub fn sample_gateway_responses() -> Vec<(&'static str, GatewayResponse)> {
    let segment = sample_segment();
    vec![
        ("done", GatewayResponse::Done),
        (
            "forbidden",
            GatewayResponse::Error {
                code: RpcCode::Forbidden,
                message: "not a registered gateway".into(),
            },
        ),
        (
            "placed",
            GatewayResponse::Placed(
                segment
                    .shards
                    .iter()
                    .map(|s| PlacedShard {
                        addr: "127.0.0.1:7000".into(),
                        order: s.order.clone(),
                    })
                    .collect(),
            ),
        ),
        (
            "read-orders",
            GatewayResponse::ReadOrders(ReadOrders {
                first: 0,
                segments: vec![
                    sample_orders()[1..2].iter().cloned().map(Some).collect(),
                    vec![None],
                ],
            }),
        ),
        ("stored", GatewayResponse::Stored { existed: true }),
        (
            "not-leader",
            GatewayResponse::NotLeader {
                leader: Some("10.0.0.2:7300".into()),
            },
        ),
        (
            "object-record",
            GatewayResponse::Object(Some(Box::new(
                cairn_client::records::ObjectRecord {
                    size: SAMPLE_SEGMENT_LEN,
                    etag: "\"00\"".into(),
                    last_modified_ms: 1_700_000_000_000,
                    headers: ObjectHeaders::default(),
                    body: cairn_client::records::ObjectBody::Segments {
                        erasure: cairn_client::records::ErasureProfile {
                            k: FUZZ_PROFILE.k,
                            m: FUZZ_PROFILE.m,
                            segment_size: FUZZ_PROFILE.segment_size,
                        },
                        segments: vec![cairn_client::records::SegmentRecord {
                            len: SAMPLE_SEGMENT_LEN,
                            shards: vec![ShardRecord {
                                id: ShardId([0x60; 16]),
                                node: node_key().public(),
                                root: ShardRoot::of(&[0]),
                            }],
                            mask: None,
                        }],
                    },
                    acl: Default::default(),
                    parts: Vec::new(),
                    checksum: None,
                },
            ))),
        ),
    ]
}

// ---------------------------------------------------------------------------------------
// Nix keys

/// The real public key that signed the narinfos in `s3-api/tests/fixtures/nix/` (its
/// secret was thrown away, so nothing else can carry a valid signature by it).
pub const REAL_CACHE_KEY: &str = "test-cache-1:MJrC7hl/nBdDBjGJN/dIdiZZyimkEBVshhWYx5sR8kk=";

/// The only fingerprints [`REAL_CACHE_KEY`] ever signed: those of the three store paths in
/// the fixtures (each cache there holds the same three).
pub const REAL_SIGNED_FINGERPRINTS: [&str; 3] = [
    "1;/nix/store/6z3qjw504hxpywcwkywwwyz89mw81xqh-a.txt;\
     sha256:1g6bd0a7sjbrh7zcmpxjhdzy83242p6503qjlgl3gscdnbblpbh9;72288;\
     /nix/store/j3h4iwwi8aa5hnvdv707594xmjdc8adk-c.txt,\
     /nix/store/rhsy82qv90a0kf5gzylzb3v0yhlal014-b.txt",
    "1;/nix/store/j3h4iwwi8aa5hnvdv707594xmjdc8adk-c.txt;\
     sha256:0ysr0h4a9fm0hymmbimcx5jvzg9dfl0cfvq6d6xppw383wkw08q4;120;",
    "1;/nix/store/rhsy82qv90a0kf5gzylzb3v0yhlal014-b.txt;\
     sha256:080am6dna3a5brqdr71fs7xvvlb3naxq98a33a2vyrxdldhq42f3;120;",
];

/// Name of the key the `narinfo` target signs with itself.
pub const FUZZ_CACHE_NAME: &str = "fuzz-cache-1";

/// The secret half of [`FUZZ_CACHE_NAME`]'s key (a fixed seed: fuzzing is not secret).
pub fn fuzz_cache_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[0xf2; 32])
}

/// `Sig` value (`name:base64`) of `fingerprint` by [`fuzz_cache_key`].
pub fn fuzz_cache_sig(fingerprint: &str) -> String {
    use base64::Engine as _;
    use ed25519_dalek::Signer as _;
    let sig = fuzz_cache_key().sign(fingerprint.as_bytes());
    format!(
        "{FUZZ_CACHE_NAME}:{}",
        base64::engine::general_purpose::STANDARD.encode(sig.to_bytes())
    )
}

/// [`fuzz_cache_key`]'s public half as a `name:base64` trusted key.
pub fn fuzz_cache_public() -> String {
    use base64::Engine as _;
    format!(
        "{FUZZ_CACHE_NAME}:{}",
        base64::engine::general_purpose::STANDARD
            .encode(fuzz_cache_key().verifying_key().as_bytes())
    )
}
