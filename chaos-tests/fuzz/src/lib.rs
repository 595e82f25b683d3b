//! What the fuzz targets share: the fixed keys they verify against, the sample messages the
//! seed corpora are made of, a reader for structured inputs, and an allocator that turns
//! one absurd allocation into a crash libFuzzer reports (with or without a sanitizer).
//!
//! `examples/make_seeds.rs` writes the seed corpora from the samples here; the targets are in
//! `fuzz_targets/`. See docs/fuzzing.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::io::Write as _;
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd as _;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use cairn_erasure::ShardRoot;
use cairn_proto::identity::{PublicKey, SecretKey};
use cairn_proto::ids::ShardId;
use cairn_proto::order::{Action, Order, Receipt, SignedOrder, SignedReceipt};
use cairn_proto::wire::{
    CoordinatorRequest, ErrorCode, Heartbeat, JoinRequest, NodeRequest, NodeResponse,
};

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
