//! Property tests: slice proofs verify for random ranges, fail for any tampered byte or
//! wrong root, and degraded range reads decode only the columns they need.

use cairn_erasure::layout::ObjectLayout;
use cairn_erasure::slice::{ProofError, SliceOutboard, SliceProof, verify_into};
use cairn_erasure::{Codec, ShardRoot};
use proptest::prelude::*;

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2] ^ seed)
        .collect()
}

/// Reads a proof at most `.1` bytes at a time.
struct Pieces<'a>(&'a [u8], usize);

impl std::io::Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.len().min(self.1).min(buf.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// A shard size and a non-empty range inside it.
fn shard_and_range() -> impl Strategy<Value = (usize, u64, u64)> {
    prop_oneof![
        1usize..2048,
        1usize..300_000,
        Just(16 * 1024),
        Just(64 * 1024 + 1)
    ]
    .prop_flat_map(|size| {
        (0..size as u64)
            .prop_flat_map(move |start| (Just(size), Just(start), start + 1..=size as u64))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn proofs_verify_for_random_ranges((size, start, end) in shard_and_range(), seed in any::<u8>()) {
        let shard = bytes(size, seed);
        let outboard = SliceOutboard::compute(&shard);
        prop_assert_eq!(outboard.root(), ShardRoot::of(&shard));
        let proof = outboard.prove(&shard[..], start..end).unwrap();
        let got = proof.verify(&outboard.root(), size as u64, start..end).unwrap();
        prop_assert_eq!(&got[..], &shard[start as usize..end as usize]);
    }

    /// A proof read in pieces of any size (as QUIC delivers it) verifies into the caller's
    /// buffer, and `each` sees every byte of the range exactly once, in order, after it was
    /// written there; with a byte tampered, `each` never sees the leaf that held it.
    #[test]
    fn proofs_verify_into_a_buffer_from_pieces(
        (size, start, end) in shard_and_range(),
        piece in 1usize..5000,
        at in any::<proptest::sample::Index>(),
    ) {
        let shard = bytes(size, 5);
        let outboard = SliceOutboard::compute(&shard);
        let proof = outboard.prove(&shard[..], start..end).unwrap().into_bytes();
        let wanted = &shard[start as usize..end as usize];
        let mut out = vec![0u8; wanted.len()];
        let mut seen = Vec::new();
        verify_into(Pieces(&proof, piece), &outboard.root(), size as u64, start..end, &mut out, |b| {
            seen.extend_from_slice(b);
        })
        .unwrap();
        prop_assert_eq!(&out[..], wanted);
        prop_assert_eq!(&seen[..], wanted);

        let mut bad = proof.clone();
        let at = at.index(bad.len());
        bad[at] ^= 1;
        let mut seen = Vec::new();
        let result = verify_into(Pieces(&bad, piece), &outboard.root(), size as u64, start..end, &mut out, |b| {
            seen.extend_from_slice(b);
        });
        prop_assert!(matches!(result, Err(ProofError::Mismatch)), "{result:?}");
        // What was handed out before the failure is a prefix of the true bytes.
        prop_assert!(seen.len() < wanted.len());
        prop_assert_eq!(&seen[..], &wanted[..seen.len()]);
    }

    #[test]
    fn any_tampered_proof_byte_fails(
        (size, start, end) in shard_and_range(),
        at in any::<proptest::sample::Index>(),
        bit in 0u8..8,
    ) {
        let shard = bytes(size, 1);
        let outboard = SliceOutboard::compute(&shard);
        let mut proof = outboard.prove(&shard[..], start..end).unwrap().into_bytes();
        let at = at.index(proof.len());
        proof[at] ^= 1 << bit;
        let result = SliceProof::from_bytes(proof).verify(&outboard.root(), size as u64, start..end);
        prop_assert!(matches!(result, Err(ProofError::Mismatch)), "{result:?}");
    }

    #[test]
    fn a_wrong_root_fails((size, start, end) in shard_and_range(), other in any::<[u8; 32]>()) {
        let shard = bytes(size, 2);
        let outboard = SliceOutboard::compute(&shard);
        let proof = outboard.prove(&shard[..], start..end).unwrap();
        let wrong = ShardRoot::from_bytes(other);
        prop_assume!(wrong != outboard.root());
        prop_assert!(proof.verify(&wrong, size as u64, start..end).is_err());
    }

    #[test]
    fn a_damaged_shard_cannot_be_proven(
        (size, start, end) in shard_and_range(),
        bit in 0u8..8,
    ) {
        let mut shard = bytes(size, 3);
        let outboard = SliceOutboard::compute(&shard);
        // Damage a byte inside the range asked for.
        shard[start as usize] ^= 1 << bit;
        let result = outboard.prove(&shard[..], start..end);
        prop_assert!(matches!(result, Err(ProofError::Damaged(_))), "{result:?}");
    }

    #[test]
    fn degraded_range_reads_decode_only_their_columns(
        seg_len in 1u64..200_000,
        a in any::<proptest::sample::Index>(),
        b in any::<proptest::sample::Index>(),
        lost in 0usize..4,
    ) {
        let codec = Codec::new(4, 2).unwrap();
        let data = bytes(seg_len as usize, 4);
        let segment = codec.encode_segment(0, 0, data.clone());
        let layout = ObjectLayout::new(seg_len, seg_len, codec).unwrap();
        let (x, y) = (a.index(seg_len as usize) as u64, b.index(seg_len as usize) as u64);
        let range = x.min(y)..x.max(y) + 1;
        let plan = layout.plan_read(range.clone()).unwrap();
        prop_assert_eq!(plan.len(), 1);
        let read = &plan[0];
        // Normal read: the planned data-shard ranges, concatenated, are the bytes.
        let mut normal = Vec::new();
        for s in &read.shards {
            normal.extend_from_slice(&segment.shard(s.shard).unwrap()[s.range.start as usize..s.range.end as usize]);
        }
        prop_assert_eq!(&normal[..], &data[range.start as usize..range.end as usize]);
        // Degraded read: data shard `lost` is gone; fetch the columns from the other k.
        let cols = read.columns();
        let pieces: Vec<(usize, &[u8])> = (0..6)
            .filter(|&i| i != lost)
            .take(4)
            .map(|i| (i, &segment.shard(i).unwrap()[cols.start as usize..cols.end as usize]))
            .collect();
        let recovered = codec.recover_columns(read.span.shard_len, cols.clone(), &pieces).unwrap();
        let width = (cols.end - cols.start) as usize;
        let mut degraded = Vec::new();
        for s in &read.shards {
            let piece = &recovered[s.shard * width..(s.shard + 1) * width];
            let from = (s.range.start - cols.start) as usize;
            let to = (s.range.end - cols.start) as usize;
            degraded.extend_from_slice(&piece[from..to]);
        }
        prop_assert_eq!(&degraded[..], &data[range.start as usize..range.end as usize]);
    }
}

#[test]
fn truncated_and_padded_proofs_fail() {
    let shard = bytes(100_000, 7);
    let outboard = SliceOutboard::compute(&shard);
    let proof = outboard
        .prove(&shard[..], 20_000..40_000)
        .unwrap()
        .into_bytes();
    let short = SliceProof::from_bytes(proof[..proof.len() - 1].to_vec());
    assert!(matches!(
        short.verify(&outboard.root(), 100_000, 20_000..40_000),
        Err(ProofError::Truncated)
    ));
    let mut long = proof.clone();
    long.push(0);
    assert!(matches!(
        SliceProof::from_bytes(long).verify(&outboard.root(), 100_000, 20_000..40_000),
        Err(ProofError::TrailingBytes(1))
    ));
    // A proof for one range does not pass for another.
    assert!(
        SliceProof::from_bytes(proof)
            .verify(&outboard.root(), 100_000, 60_000..80_000)
            .is_err()
    );
    // Empty and out-of-bounds ranges are refused up front.
    assert!(matches!(
        outboard.prove(&shard[..], 5..5),
        Err(ProofError::InvalidRange { .. })
    ));
    assert!(matches!(
        outboard.prove(&shard[..], 0..100_001),
        Err(ProofError::InvalidRange { .. })
    ));
}
