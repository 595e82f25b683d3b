//! `cairn-bench erasure`: how fast this machine codes, hashes, masks and rebuilds segments.

use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cairn_erasure::{Codec, MaskKey, SegmentEncoder, SegmentNonce};
use clap::Args;
use tokio::io::{AsyncRead, ReadBuf};

use crate::measure::{gib_per_s, median_time, peak_rss_bytes, pseudo_random, time};
use cairn_proto::bytesize::ByteSize;

/// Options of `cairn-bench erasure`.
#[derive(Args)]
pub struct ErasureArgs {
    /// Data shards per segment.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Parity shards per segment.
    #[arg(long, default_value_t = 6)]
    m: usize,
    /// Segment size measured by the in-memory runs.
    #[arg(long, default_value = "64MiB")]
    size: ByteSize,
    /// Timed runs per measurement (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 5)]
    iterations: usize,
    /// Bytes to push through the streaming encoder to measure its peak memory (0 skips).
    #[arg(long, default_value = "1GiB")]
    stream: ByteSize,
}

/// Figures of one run.
struct Report {
    memcpy: f64,
    blake3: f64,
    encode: f64,
    encode_hash: f64,
    encode_hash_mask: f64,
    unmask: f64,
    blake3_xof_mask: f64,
    rebuild: f64,
    decode_verified: f64,
    stream: Option<(f64, u64)>,
}

pub fn run(args: ErasureArgs) -> anyhow::Result<()> {
    let codec = Codec::new(args.k, args.m).context("invalid erasure code")?;
    let size = usize::try_from(args.size.0).context("--size does not fit in memory")?;
    anyhow::ensure!(size > 0, "--size must be at least one byte");
    let lost = args.m.min(args.k);
    println!(
        "cairn-bench erasure: code {}+{}, segment {}, median of {} runs, one core",
        args.k, args.m, args.size, args.iterations
    );

    // The stream goes first so that its peak-RSS reading is not raised by the buffers below.
    let stream = if args.stream.0 > 0 {
        Some(stream_encode(codec, args.size.0, args.stream.0)?)
    } else {
        None
    };

    let data = pseudo_random(size, 0x00c0_ffee);
    let bytes = size as u64;
    let runs = args.iterations;

    let mut copy = vec![0u8; size];
    copy.copy_from_slice(&data); // fault the pages in before timing
    let memcpy = median_time(runs, || {
        time(|| {
            // Both ends pass through black_box so the copy cannot be elided.
            black_box(&mut copy[..]).copy_from_slice(black_box(&data));
            black_box(&copy);
        })
    });
    drop(copy);

    let blake3 = median_time(runs, || {
        time(|| {
            black_box(blake3::hash(&data));
        })
    });

    let shard_len = codec.shard_len(bytes) as usize;
    let mut padded = data.clone();
    padded.resize(codec.data_shards() * shard_len, 0);
    let encode = median_time(runs, || {
        time(|| drop(black_box(codec.encode_parity(&padded, shard_len))))
    });

    // The buffer arrives as the streaming encoder and the gateway fill it: a segment buffer
    // with room for the padding, its pages touched by the reader before encoding starts.
    let encode_hash = median_time(runs, || {
        let mut buffer = codec.segment_buffer(bytes);
        buffer.extend_from_slice(&data);
        time(|| drop(black_box(codec.encode_segment(0, 0, buffer))))
    });

    // What the gateway does: mask each stripe right before coding and hashing it.
    let key = MaskKey::random().context("no randomness for a mask key")?;
    let nonce = SegmentNonce::random().context("no randomness for a nonce")?;
    let encode_hash_mask = median_time(runs, || {
        let mut buffer = codec.segment_buffer(bytes);
        buffer.extend_from_slice(&data);
        time(|| {
            drop(black_box(
                codec.encode_masked_segment(0, 0, buffer, &key, nonce),
            ))
        })
    });
    // What a read does with verified bytes: unmask them in place at their offset.
    let mut stored = data.clone();
    let unmask = median_time(runs, || {
        time(|| {
            let unmasked = key.apply(&nonce, 0, black_box(&mut stored[..]));
            black_box(unmasked).ok();
        })
    });
    // The keystream not chosen, so the choice can be checked again on another CPU: BLAKE3's
    // XOF only emits many blocks at once with AVX-512 (see erasure/src/mask.rs).
    let blake3_xof_mask = median_time(runs, || {
        time(|| {
            let mut xof = blake3::Hasher::new_keyed(&[7; 32])
                .update(nonce.as_bytes())
                .finalize_xof();
            let mut block = [0u8; 16 << 10];
            for chunk in stored.chunks_mut(block.len()) {
                xof.fill(&mut block[..chunk.len()]);
                for (byte, mask) in chunk.iter_mut().zip(&block) {
                    *byte ^= mask;
                }
            }
            black_box(&stored);
        })
    });
    let masked = codec.encode_masked_segment(0, 0, data.clone(), &key, nonce);
    let mut decoded = codec
        .decode_segment(
            bytes,
            masked.roots(),
            &masked.shards().enumerate().collect::<Vec<_>>(),
        )
        .context("decoding the masked segment")?
        .data;
    key.apply(&nonce, 0, &mut decoded)?;
    anyhow::ensure!(decoded == data, "unmasked segment differs from the input");
    drop((masked, decoded, stored));

    let segment = codec.encode_segment(0, 0, data.clone());
    // Lose the first `lost` data shards; rebuild from the other data shards and parity.
    let survivors: Vec<(usize, &[u8])> = (lost..codec.total_shards())
        .take(codec.data_shards())
        .filter_map(|i| segment.shard(i).map(|s| (i, s)))
        .collect();
    let rebuild = median_time(runs, || {
        time(|| {
            let out = codec.recover_columns(shard_len as u64, 0..shard_len as u64, &survivors);
            drop(black_box(out));
        })
    });
    let decode_verified = median_time(runs, || {
        time(|| {
            let out = codec.decode_segment(bytes, segment.roots(), &survivors);
            drop(black_box(out));
        })
    });
    if let Ok(decoded) = codec.decode_segment(bytes, segment.roots(), &survivors) {
        anyhow::ensure!(
            decoded.data == data,
            "rebuilt segment differs from the input"
        );
    } else {
        anyhow::bail!(
            "could not rebuild the segment from {} shards",
            survivors.len()
        );
    }

    let report = Report {
        memcpy: gib_per_s(bytes, memcpy),
        blake3: gib_per_s(bytes, blake3),
        encode: gib_per_s(bytes, encode),
        encode_hash: gib_per_s(bytes, encode_hash),
        encode_hash_mask: gib_per_s(bytes, encode_hash_mask),
        unmask: gib_per_s(bytes, unmask),
        blake3_xof_mask: gib_per_s(bytes, blake3_xof_mask),
        rebuild: gib_per_s(bytes, rebuild),
        decode_verified: gib_per_s(bytes, decode_verified),
        stream,
    };
    print_table(
        &args,
        lost,
        &report,
        [
            memcpy,
            blake3,
            encode,
            encode_hash,
            encode_hash_mask,
            unmask,
            blake3_xof_mask,
            rebuild,
            decode_verified,
        ],
    );
    let mut json = serde_json::json!({
        "k": args.k,
        "m": args.m,
        "segment_bytes": bytes,
        "iterations": runs,
        "memcpy_gib_s": round(report.memcpy),
        "blake3_gib_s": round(report.blake3),
        "encode_gib_s": round(report.encode),
        "encode_hash_gib_s": round(report.encode_hash),
        "rebuild_gib_s": round(report.rebuild),
        "decode_verified_gib_s": round(report.decode_verified),
        "encode_hash_over_memcpy": round(report.encode_hash / report.memcpy),
        "encode_hash_mask_gib_s": round(report.encode_hash_mask),
        "unmask_gib_s": round(report.unmask),
        "blake3_xof_mask_gib_s": round(report.blake3_xof_mask),
    });
    if let Some((speed, grown)) = report.stream {
        json["stream_bytes"] = args.stream.0.into();
        json["stream_gib_s"] = round(speed).into();
        json["stream_peak_rss_growth_bytes"] = grown.into();
    }
    println!("{json}");
    Ok(())
}

fn print_table(args: &ErasureArgs, lost: usize, r: &Report, times: [Duration; 9]) {
    let rows = [
        ("memcpy", r.memcpy),
        ("blake3 (data only)", r.blake3),
        ("encode (parity only)", r.encode),
        ("encode + hash all shards", r.encode_hash),
        ("mask + encode + hash", r.encode_hash_mask),
        ("unmask (ChaCha20)", r.unmask),
        ("mask with BLAKE3 XOF (alt.)", r.blake3_xof_mask),
        ("rebuild, RS only", r.rebuild),
        ("decode, verify + rebuild", r.decode_verified),
    ];
    println!("{:<28} {:>8} {:>12}", "operation", "GiB/s", "ms/segment");
    for ((name, speed), elapsed) in rows.iter().zip(times) {
        println!(
            "{name:<28} {speed:>8.2} {:>12.1}",
            elapsed.as_secs_f64() * 1e3
        );
    }
    println!("(rebuild and decode with {lost} data shards lost)");
    if let Some((speed, grown)) = r.stream {
        println!(
            "{:<28} {speed:>8.2}   peak RSS +{} for {} streamed",
            "stream encode + hash",
            ByteSize(grown),
            args.stream
        );
    }
    println!(
        "encode+hash / memcpy = {:.3} (target for 10+6: at least 0.15)",
        r.encode_hash / r.memcpy
    );
}

fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// Streams `total` generated bytes through the segment encoder, dropping each segment as a
/// sender would after handing its shards off; returns GiB/s and the peak RSS growth.
fn stream_encode(codec: Codec, segment_size: u64, total: u64) -> anyhow::Result<(f64, u64)> {
    let before = peak_rss_bytes().unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(1)
        .build()?;
    let started = Instant::now();
    let encoded = runtime.block_on(async {
        let source = Generated {
            block: pseudo_random(1 << 20, 7),
            at: 0,
            remaining: total,
        };
        let mut encoder = SegmentEncoder::new(codec, segment_size, source)?;
        while let Some(segment) = encoder.next_segment().await? {
            black_box(segment.roots());
        }
        anyhow::Ok(encoder.bytes_encoded())
    })?;
    let elapsed = started.elapsed();
    anyhow::ensure!(encoded == total, "streamed {encoded} of {total} bytes");
    let grown = peak_rss_bytes().unwrap_or(0).saturating_sub(before);
    Ok((gib_per_s(total, elapsed), grown))
}

/// A reader of `remaining` pseudo-random bytes that holds only one 1 MiB block.
struct Generated {
    block: Vec<u8>,
    at: usize,
    remaining: u64,
}

impl AsyncRead for Generated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let want = (buf.remaining() as u64).min(self.remaining) as usize;
        let n = want.min(self.block.len() - self.at);
        let at = self.at;
        buf.put_slice(&self.block[at..at + n]);
        self.at = (at + n) % self.block.len();
        self.remaining -= n as u64;
        if self.at == 0 {
            // Change the block each lap so that segments differ.
            self.block[0] = self.block[0].wrapping_add(1);
        }
        Poll::Ready(Ok(()))
    }
}
