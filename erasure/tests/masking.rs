//! Masked segments: stored bytes (data and parity shards, and so their roots) differ from
//! what the public object encodes to, yet decode, rebuild and range-read back to the object
//! once unmasked at their segment offset.

use cairn_erasure::layout::ObjectLayout;
use cairn_erasure::{Codec, EncodedSegment, MaskKey, SegmentEncoder, SegmentNonce};
use proptest::prelude::*;

fn object(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn key() -> MaskKey {
    MaskKey::from_bytes([0x5a; 32])
}

/// Streams `data` through a masking [`SegmentEncoder`].
fn encode_masked(
    codec: Codec,
    segment_size: u64,
    data: &[u8],
    key: &MaskKey,
) -> Vec<EncodedSegment> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut encoder = SegmentEncoder::new(codec, segment_size, data)
            .unwrap()
            .masked(key.clone());
        let mut segments = Vec::new();
        while let Some(segment) = encoder.next_segment().await.unwrap() {
            segments.push(segment);
        }
        segments
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn masked_objects_decode_and_rebuild_from_any_k_shards(
        k in 1usize..=6,
        m in 0usize..=4,
        seg in 1usize..3000,
        size in 1usize..9000,
        seed in any::<u64>(),
        rotate in any::<proptest::sample::Index>(),
    ) {
        let codec = Codec::new(k, m).unwrap();
        let data = object(size, seed);
        let key = key();
        let segments = encode_masked(codec, seg as u64, &data, &key);
        let mut nonces = Vec::new();
        let mut rebuilt = Vec::with_capacity(size);
        for segment in &segments {
            let nonce = segment.mask().expect("every segment is masked");
            nonces.push(nonce);
            let mut chosen: Vec<usize> = (0..k + m).collect();
            chosen.rotate_left(rotate.index(k + m));
            chosen.truncate(k);
            let given: Vec<(usize, &[u8])> =
                chosen.iter().map(|&i| (i, segment.shard(i).unwrap())).collect();
            let mut decoded = codec
                .decode_segment(segment.segment_len(), segment.roots(), &given)
                .unwrap()
                .data;
            prop_assert_eq!(&decoded[..], segment.data());
            key.apply(&nonce, 0, &mut decoded).unwrap();
            rebuilt.extend_from_slice(&decoded);
            // Repair needs nothing of the mask: lost shards rebuild from masked ones.
            let lost: Vec<usize> = (0..k + m).filter(|i| !chosen.contains(i)).collect();
            let again = codec
                .rebuild_shards(segment.segment_len(), segment.roots(), &given, &lost)
                .unwrap();
            for (index, bytes) in again.shards {
                prop_assert_eq!(&bytes[..], segment.shard(index).unwrap());
            }
        }
        prop_assert!(rebuilt == data, "object differs after decoding and unmasking");
        nonces.sort();
        nonces.dedup();
        prop_assert_eq!(nonces.len(), segments.len(), "a nonce was reused");
    }

    #[test]
    fn masked_ranges_read_back_normally_and_degraded(
        seg_len in 1u64..200_000,
        a in any::<proptest::sample::Index>(),
        b in any::<proptest::sample::Index>(),
        lost in 0usize..4,
    ) {
        let codec = Codec::new(4, 2).unwrap();
        let data = object(seg_len as usize, 4);
        let (key, nonce) = (key(), SegmentNonce::from_bytes([lost as u8; 16]));
        let segment = codec.encode_masked_segment(0, 0, data.clone(), &key, nonce);
        let layout = ObjectLayout::new(seg_len, seg_len, codec).unwrap();
        let (x, y) = (a.index(seg_len as usize) as u64, b.index(seg_len as usize) as u64);
        let range = x.min(y)..x.max(y) + 1;
        let expected = &data[range.start as usize..range.end as usize];
        let read = &layout.plan_read(range.clone()).unwrap()[0];
        let mut normal = Vec::new();
        for s in &read.shards {
            normal.extend_from_slice(&segment.shard(s.shard).unwrap()[s.range.start as usize..s.range.end as usize]);
        }
        key.apply(&nonce, range.start, &mut normal).unwrap();
        prop_assert_eq!(&normal[..], expected);
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
            degraded.extend_from_slice(&piece[(s.range.start - cols.start) as usize..(s.range.end - cols.start) as usize]);
        }
        key.apply(&nonce, range.start, &mut degraded).unwrap();
        prop_assert_eq!(&degraded[..], expected);
    }
}

/// Masking fused into the stripe loop gives exactly what masking the padded buffer first
/// and encoding it plainly gives, across several 128 KiB stripes and a short last one.
#[test]
fn fused_masking_equals_masking_then_encoding() {
    let (key, nonce) = (key(), SegmentNonce::from_bytes([3; 16]));
    for (k, m, len) in [(2, 1, 700_001), (3, 2, 1000), (4, 0, 300_000), (1, 1, 64)] {
        let codec = Codec::new(k, m).unwrap();
        let data = object(len, len as u64);
        let masked = codec.encode_masked_segment(7, 99, data.clone(), &key, nonce);
        let mut padded = data.clone();
        padded.resize(k * codec.shard_len(len as u64) as usize, 0);
        key.apply(&nonce, 0, &mut padded).unwrap();
        let reference = codec.encode_segment(7, 99, padded);
        assert_eq!(masked.shard_len(), reference.shard_len());
        assert_eq!(masked.roots(), reference.roots(), "{k}+{m}, {len} bytes");
        for (a, b) in masked.shards().zip(reference.shards()) {
            assert_eq!(a, b);
        }
        assert_eq!(masked.mask(), Some(nonce));
        assert_eq!(reference.mask(), None);
    }
}

/// What audits rely on: encoding the public object again, with the same code, reproduces
/// none of the stored shards, so a node that dropped its shard cannot answer from it.
#[test]
fn the_public_object_does_not_reproduce_masked_shards() {
    let codec = Codec::new(4, 2).unwrap();
    let data = object(500_000, 11);
    let nonce = SegmentNonce::random().unwrap();
    let stored = codec.encode_masked_segment(0, 0, data.clone(), &key(), nonce);
    let recomputed = codec.encode_segment(0, 0, data.clone());
    for (i, root) in stored.roots().iter().enumerate() {
        assert!(
            !recomputed.roots().contains(root),
            "shard {i} is reproducible from the object"
        );
    }
    // Nor does the right nonce with another key, or the right key with another nonce.
    let other_key = MaskKey::from_bytes([0x5b; 32]);
    let guessed = codec.encode_masked_segment(0, 0, data.clone(), &other_key, nonce);
    let other_nonce = SegmentNonce::random().unwrap();
    let guessed_nonce = codec.encode_masked_segment(0, 0, data, &key(), other_nonce);
    for (i, root) in stored.roots().iter().enumerate() {
        assert_ne!(*root, guessed.roots()[i]);
        assert_ne!(*root, guessed_nonce.roots()[i]);
    }
    // No 128-byte run of the object survives in any stored shard: every such run holds one
    // of the object's 64-byte aligned blocks, and no shard holds one at any offset.
    let blocks: std::collections::HashSet<&[u8]> = recomputed.data().chunks_exact(64).collect();
    for shard in stored.shards() {
        assert!(shard.windows(64).all(|window| !blocks.contains(window)));
    }
}
