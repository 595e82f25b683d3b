//! Property tests: objects streamed through the encoder come back byte-exact from any `k`
//! shards, corrupt shards are named, and too few good shards is a typed error.

use cairn_erasure::{Codec, CodecError, DecodeError, EncodedSegment, SegmentEncoder, ShardRoot};
use proptest::prelude::*;
use proptest::sample::subsequence;

/// Deterministic pseudo-random bytes (the contents matter less than that they vary).
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

/// Streams `data` through a [`SegmentEncoder`] that sees it in uneven reads.
fn encode(codec: Codec, segment_size: u64, data: &[u8]) -> Vec<EncodedSegment> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        // A reader that returns at most 777 bytes per read, to exercise partial reads.
        let (mut client, server) = tokio::io::duplex(777);
        let owned = data.to_vec();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            client.write_all(&owned).await.unwrap();
        });
        let mut encoder = SegmentEncoder::new(codec, segment_size, server).unwrap();
        let mut segments = Vec::new();
        while let Some(segment) = encoder.next_segment().await.unwrap() {
            segments.push(segment);
        }
        writer.await.unwrap();
        assert_eq!(encoder.bytes_encoded(), data.len() as u64);
        segments
    })
}

/// Object sizes that matter for a code and segment size: empty, one byte, k − 1, segment
/// boundary ± 1, several segments, and something random.
fn sizes(k: usize, seg: usize) -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(k - 1),
        Just(seg - 1),
        Just(seg),
        Just(seg + 1),
        Just(3 * seg + 17),
        0..5 * seg,
    ]
}

fn case() -> impl Strategy<Value = (usize, usize, usize, usize, u64)> {
    (
        1usize..=8,
        0usize..=5,
        prop_oneof![Just(1usize), 2usize..5000],
    )
        .prop_flat_map(|(k, m, seg)| {
            let seg = seg.max(k);
            (Just(k), Just(m), Just(seg), sizes(k, seg), any::<u64>())
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn any_k_shards_rebuild_the_object(
        (k, m, seg, size, seed) in case(),
        pick in any::<proptest::sample::Index>(),
    ) {
        let codec = Codec::new(k, m).unwrap();
        let data = object(size, seed);
        let segments = encode(codec, seg as u64, &data);
        prop_assert_eq!(segments.len(), size.div_ceil(seg));
        let mut rebuilt = Vec::with_capacity(size);
        for segment in &segments {
            prop_assert_eq!(segment.offset as usize, rebuilt.len());
            // Choose k of the k + m shards, a different choice for each segment.
            let mut chosen: Vec<usize> = (0..k + m).collect();
            let rotate = pick.index(k + m) + segment.index as usize;
            chosen.rotate_left(rotate % (k + m));
            chosen.truncate(k);
            let given: Vec<(usize, &[u8])> =
                chosen.iter().map(|&i| (i, segment.shard(i).unwrap())).collect();
            let decoded = codec
                .decode_segment(segment.segment_len(), segment.roots(), &given)
                .unwrap();
            prop_assert!(decoded.rejected.is_empty());
            prop_assert_eq!(&decoded.data[..], segment.data());
            rebuilt.extend_from_slice(&decoded.data);
        }
        prop_assert!(rebuilt == data, "object differs after decoding");
    }

    #[test]
    fn a_flipped_byte_is_caught_and_named(
        (k, m, seg, size, seed) in case(),
        victim in any::<proptest::sample::Index>(),
        at in any::<proptest::sample::Index>(),
        bit in 0u8..8,
    ) {
        let codec = Codec::new(k, m).unwrap();
        let data = object(size.max(1), seed);
        let segments = encode(codec, seg as u64, &data);
        let segment = &segments[0];
        let bad = victim.index(k + m);
        let mut flipped = segment.shard(bad).unwrap().to_vec();
        let at = at.index(flipped.len());
        flipped[at] ^= 1 << bit;
        let given: Vec<(usize, &[u8])> = (0..k + m)
            .map(|i| (i, if i == bad { &flipped[..] } else { segment.shard(i).unwrap() }))
            .collect();
        let result = codec.decode_segment(segment.segment_len(), segment.roots(), &given);
        if m >= 1 {
            let decoded = result.unwrap();
            prop_assert_eq!(decoded.rejected, vec![bad]);
            prop_assert_eq!(&decoded.data[..], segment.data());
        } else {
            prop_assert_eq!(
                result.unwrap_err(),
                DecodeError::TooFewShards { needed: k, good: k - 1, rejected: vec![bad] }
            );
        }
    }

    #[test]
    fn fewer_than_k_good_shards_is_a_typed_error(
        (k, m, seg, size, seed) in case(),
        keep in any::<proptest::sample::Index>(),
    ) {
        let codec = Codec::new(k, m).unwrap();
        let data = object(size.max(1), seed);
        let segment = &encode(codec, seg as u64, &data)[0];
        let count = keep.index(k); // 0 ..= k - 1 shards
        let given: Vec<(usize, &[u8])> =
            (0..count).map(|i| (k + m - 1 - i, segment.shard(k + m - 1 - i).unwrap())).collect();
        let err = codec.decode_segment(segment.segment_len(), segment.roots(), &given).unwrap_err();
        prop_assert_eq!(err, DecodeError::TooFewShards { needed: k, good: count, rejected: vec![] });
    }

    #[test]
    fn rebuilt_shards_equal_the_originals(
        (k, m, seg, size, seed) in case(),
        lost in subsequence((0..13usize).collect::<Vec<_>>(), 0..=5),
    ) {
        let codec = Codec::new(k, m).unwrap();
        let data = object(size.max(1), seed);
        let segment = &encode(codec, seg as u64, &data)[0];
        // Lose at most m shards, then rebuild exactly those from the rest.
        let lost: Vec<usize> = lost.into_iter().filter(|&i| i < k + m).take(m).collect();
        let given: Vec<(usize, &[u8])> = (0..k + m)
            .filter(|i| !lost.contains(i))
            .map(|i| (i, segment.shard(i).unwrap()))
            .collect();
        let rebuilt = codec
            .rebuild_shards(segment.segment_len(), segment.roots(), &given, &lost)
            .unwrap();
        prop_assert_eq!(rebuilt.shards.len(), lost.len());
        for (index, bytes) in rebuilt.shards {
            prop_assert_eq!(&bytes[..], segment.shard(index).unwrap());
        }
    }
}

#[test]
fn invalid_parameters_are_errors_not_panics() {
    assert_eq!(Codec::new(0, 2), Err(CodecError::NoDataShards));
    assert_eq!(
        Codec::new(40_000, 30_000),
        Err(CodecError::Unsupported {
            k: 40_000,
            m: 30_000
        })
    );
    assert!(Codec::new(1, 0).is_ok());
    assert!(Codec::new(10, 6).is_ok());
    let codec = Codec::new(4, 2).unwrap();
    assert!(matches!(
        SegmentEncoder::new(codec, 0, tokio::io::empty()),
        Err(CodecError::InvalidSegmentSize(0))
    ));
}

#[test]
fn bad_indices_and_root_counts_are_errors() {
    let codec = Codec::new(2, 1).unwrap();
    let segment = codec.encode_segment(0, 0, object(100, 3));
    let roots = segment.roots();
    let a = segment.shard(0).unwrap();
    assert_eq!(
        codec.decode_segment(100, roots, &[(0, a), (0, a)]),
        Err(DecodeError::BadShardIndex { index: 0, total: 3 })
    );
    assert_eq!(
        codec.decode_segment(100, roots, &[(0, a), (7, a)]),
        Err(DecodeError::BadShardIndex { index: 7, total: 3 })
    );
    assert_eq!(
        codec.decode_segment(100, &roots[..2], &[(0, a)]),
        Err(DecodeError::RootCount { got: 2, k: 2, m: 1 })
    );
    // A shard of the wrong length is a failed verification, not a crash.
    let short = &a[..10];
    let err = codec
        .decode_segment(100, roots, &[(0, short), (2, segment.shard(2).unwrap())])
        .unwrap_err();
    assert_eq!(
        err,
        DecodeError::TooFewShards {
            needed: 2,
            good: 1,
            rejected: vec![0]
        }
    );
}

#[test]
fn inconsistent_roots_are_reported_by_rebuild() {
    let codec = Codec::new(2, 2).unwrap();
    let segment = codec.encode_segment(0, 0, object(1000, 9));
    let mut roots = segment.roots().to_vec();
    roots[3] = ShardRoot::of(b"not this shard");
    let given = [
        (0, segment.shard(0).unwrap()),
        (1, segment.shard(1).unwrap()),
    ];
    assert_eq!(
        codec.rebuild_shards(1000, &roots, &given, &[3]),
        Err(DecodeError::RootMismatch { index: 3 })
    );
}

#[test]
fn data_shards_are_the_plain_segment_bytes() {
    let codec = Codec::new(3, 2).unwrap();
    let data = object(1000, 5);
    let segment = codec.encode_segment(0, 0, data.clone());
    let shard_len = segment.shard_len();
    assert_eq!(shard_len, 384); // ⌈1000 / 3⌉ = 334 → 384
    assert_eq!(segment.shard(0).unwrap(), &data[..384]);
    assert_eq!(segment.shard(1).unwrap(), &data[384..768]);
    assert_eq!(&segment.shard(2).unwrap()[..232], &data[768..]);
    assert!(segment.shard(2).unwrap()[232..].iter().all(|&b| b == 0));
    assert_eq!(segment.shard(5), None);
}
