//! The slice proof verifier (`cairn_erasure::SliceProof::verify`): what a client or auditor
//! runs on bytes a node sends, against the root and size the catalog recorded.
//!
//! Two modes, by the first input byte:
//! - structured (7 in 8): the input picks a shard (up to 256 KiB of pseudo-random bytes,
//!   sizes biased to chunk and 16 KiB chunk-group edges), a range, and up to 8 changes:
//!   flipped, removed or inserted proof bytes, truncation, extension, another range asked
//!   for, another root or size claimed, a proof of another range swapped in, a proof made
//!   by a holder whose copy rotted. The honest proof must verify to exactly the shard's
//!   bytes; after the changes, a proof that verifies must be for the shard's own root and
//!   give exactly the shard's bytes of the range asked for. Anything else is a forged proof
//!   accepted. With no effective change, it must still verify.
//! - raw (1 in 8): the rest of the input is the proof, checked against a root taken from the
//!   input that no shard was hashed to; it must never verify.
//!
//! Shard sizes and ranges are the verifier's own trusted inputs (from signed orders), so
//! they stay realistic: ranges of at most 1 MiB, which bounds what `verify` allocates.

#![no_main]

use std::ops::Range;

use cairn_erasure::ShardRoot;
use cairn_erasure::slice::{SliceOutboard, SliceProof};
use cairn_fuzz::{Input, fill_pseudo_random, limit_allocations};
use libfuzzer_sys::fuzz_target;

/// Largest shard the structured mode builds.
const MAX_SHARD: u64 = 256 * 1024;
/// A chunk group: the proof's unit of data (16 BLAKE3 chunks).
const GROUP: u64 = 16 * 1024;
/// Largest range the raw mode asks for.
const MAX_RAW_RANGE: u64 = 1 << 20;

fuzz_target!(init: limit_allocations(16 << 20), |data: &[u8]| {
    let mut input = Input::new(data);
    if input.u8() % 8 == 7 {
        raw(input);
    } else {
        structured(input);
    }
});

/// A shard size from a class and a number.
fn shard_size(class: u8, n: u32) -> u64 {
    let n = u64::from(n);
    match class % 5 {
        // One or two BLAKE3 chunks.
        0 => 1 + n % 2048,
        // Within 64 bytes of a chunk-group edge.
        1 => {
            let groups = 1 + n % 16;
            let delta = ((n >> 8) % 129) as i64 - 64;
            (groups * GROUP)
                .saturating_add_signed(delta)
                .clamp(1, MAX_SHARD)
        }
        2 => 1 + n % MAX_SHARD,
        // Whole chunks.
        3 => (1 + n % 256) * 1024,
        _ => 0,
    }
}

/// A non-empty range within `size` (or `0..0` if `size` is 0), from a class and two numbers.
fn range_in(class: u8, a: u64, b: u64, size: u64) -> Range<u64> {
    if size == 0 {
        return 0..0;
    }
    let start = a % size;
    match class % 4 {
        // A few bytes.
        0 => start..start + 1 + b % (size - start).min(64),
        1 => start..start + 1 + b % (size - start),
        // Whole chunk groups.
        2 => {
            let groups = size.div_ceil(GROUP);
            let first = a % groups;
            let start = first * GROUP;
            let count = 1 + b % (groups - first);
            start..(start + count * GROUP).min(size)
        }
        // To the end.
        _ => start..size,
    }
}

fn structured(mut input: Input<'_>) {
    let size = shard_size(input.u8(), input.u32());
    let mut shard = vec![0u8; size as usize];
    fill_pseudo_random(&mut shard, input.u64());
    let outboard = SliceOutboard::compute(&shard);
    let root = outboard.root();
    assert_eq!(
        root,
        ShardRoot::of(&shard),
        "the outboard's root is not BLAKE3"
    );

    let range = range_in(input.u8(), input.u64(), input.u64(), size);
    if size == 0 {
        assert!(outboard.prove(&shard[..], 0..1).is_err());
        assert!(
            SliceProof::from_bytes(Vec::new())
                .verify(&root, 0, 0..1)
                .is_err()
        );
        return;
    }
    let honest = outboard
        .prove(&shard[..], range.clone())
        .unwrap_or_else(|e| panic!("an intact {size}-byte shard cannot prove {range:?}: {e}"));
    let got = honest
        .verify(&root, size, range.clone())
        .unwrap_or_else(|e| panic!("the honest proof of {range:?} of {size} bytes fails: {e}"));
    assert!(
        got == shard[as_usize(&range)],
        "the honest proof gives wrong bytes"
    );
    let honest = honest.into_bytes();

    let mut proof = honest.clone();
    let mut claimed_root = root;
    let mut claimed_size = size;
    let mut asked = range.clone();
    for _ in 0..input.u8() % 9 {
        let (op, x, y, v) = (input.u8(), input.u32(), input.u32(), input.u8());
        let flip = v.max(1);
        let (x, y) = (x as usize, y as usize);
        match op % 10 {
            0 => {
                if !proof.is_empty() {
                    let i = x % proof.len();
                    proof[i] ^= flip;
                }
            }
            1 => proof.truncate(x % (proof.len() + 1)),
            2 => proof.extend(std::iter::repeat_n(v, 1 + y % 64)),
            3 => {
                if !proof.is_empty() {
                    proof.remove(x % proof.len());
                }
            }
            4 => proof.insert(x % (proof.len() + 1), v),
            // Ask for another range than the proof is for.
            5 => asked = range_in(v, x as u64, y as u64, claimed_size),
            6 => claimed_root = flip_byte(claimed_root, x % 32, flip),
            // Claim another size (what a wrong catalog entry or order would say).
            7 => {
                let d = 1 + y as u64 % 20_000;
                claimed_size = match v % 3 {
                    0 => size + d,
                    1 => size.saturating_sub(d),
                    _ => x as u64 % (2 * MAX_SHARD),
                };
            }
            // A genuine proof, of another range of the same shard.
            8 => {
                let other = range_in(v, x as u64, y as u64, size);
                proof = outboard
                    .prove(&shard[..], other.clone())
                    .unwrap_or_else(|e| panic!("cannot prove {other:?}: {e}"))
                    .into_bytes();
            }
            // A holder whose copy rotted proves with its intact outboard: it must notice,
            // or at least not produce anything that verifies to the rotten bytes.
            _ => {
                let mut rotten = shard.clone();
                rotten[x % shard.len()] ^= flip;
                if let Ok(p) = outboard.prove(&rotten[..], range.clone()) {
                    proof = p.into_bytes();
                }
            }
        }
    }

    let untouched = proof == honest && claimed_root == root && claimed_size == size;
    match SliceProof::from_bytes(proof).verify(&claimed_root, claimed_size, asked.clone()) {
        Ok(bytes) => {
            assert!(
                claimed_root == root,
                "FORGERY: a proof verified against a root that is not the shard's"
            );
            assert!(
                asked.end <= size,
                "FORGERY: verified {asked:?} of a {size}-byte shard (claimed {claimed_size})"
            );
            assert!(
                bytes == shard[as_usize(&asked)],
                "FORGERY: verified bytes of {asked:?} differ from the shard's"
            );
        }
        Err(e) => assert!(
            !(untouched && asked == range),
            "the honest proof of {range:?} was refused: {e}"
        ),
    }
}

fn raw(mut input: Input<'_>) {
    let root = ShardRoot::from_bytes(input.bytes());
    let size = match input.u8() % 4 {
        0 => 1 + u64::from(input.u32()) % MAX_SHARD,
        1 => 1 + input.u64() % (1 << 40),
        2 => input.u64(),
        _ => u64::from(input.u8()) * GROUP,
    };
    let (a, b) = (input.u64(), input.u64());
    let range = if size == 0 {
        0..0
    } else {
        let start = a % size;
        start..start + 1 + b % (size - start).min(MAX_RAW_RANGE)
    };
    let proof = SliceProof::from_bytes(input.rest().to_vec());
    if let Ok(bytes) = proof.verify(&root, size, range.clone()) {
        panic!(
            "FORGERY: {} bytes of {range:?} verified against root {root} that no shard was \
             hashed to",
            bytes.len()
        );
    }
}

fn flip_byte(root: ShardRoot, at: usize, mask: u8) -> ShardRoot {
    let mut bytes = *root.as_bytes();
    bytes[at] ^= mask;
    ShardRoot::from_bytes(bytes)
}

fn as_usize(range: &Range<u64>) -> Range<usize> {
    range.start as usize..range.end as usize
}
