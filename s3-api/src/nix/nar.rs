//! Object names in a nix-cache bucket, and the streaming check of NAR bodies.
//!
//! Nix uploads `nar/<FileHash>.nar.<ext>` (hash of the file as stored); the new Hydra queue
//! runner uploads `nar/<NarHash>.nar.<ext>` (hash of the uncompressed NAR). Both are sha256 in
//! 52-character nix32, so a name does not say which it is: [`NarVerifier`] hashes the body as
//! it streams by *and* decompresses it into a second hash, and accepts either match.

use std::fmt;
use std::io::{self, Write};

use sha2::{Digest, Sha256};

use super::NixCheckError;
use super::base32;
use super::narinfo::check_hash_part;

/// How a NAR file is compressed, as its name's suffix says (`nar/<hash>.nar.<ext>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Compression {
    /// `.nar`: stored as is. (Nix also writes gzip NARs under this suffix; those can only match
    /// by file hash.)
    None,
    /// `.nar.xz`, Nix's default.
    Xz,
    /// `.nar.zst`, what Hydra uploads today.
    Zstd,
    /// `.nar.bz2`, old caches.
    Bzip2,
    /// `.nar.lzip`: recognised, not decompressed (file hash only).
    Lzip,
    /// `.nar.lz4`: recognised, not decompressed (file hash only).
    Lz4,
    /// `.nar.br`: recognised, not decompressed (file hash only).
    Brotli,
}

impl Compression {
    /// The suffix after `.nar`, exactly as Nix and Hydra write it. Nix writes `.zst`, never
    /// `.zstd`, so only `.zst` is accepted.
    fn from_suffix(suffix: &str) -> Option<Compression> {
        Some(match suffix {
            "" => Compression::None,
            ".xz" => Compression::Xz,
            ".zst" => Compression::Zstd,
            ".bz2" => Compression::Bzip2,
            ".lzip" => Compression::Lzip,
            ".lz4" => Compression::Lz4,
            ".br" => Compression::Brotli,
            _ => return None,
        })
    }

    /// The name Nix uses for it in a narinfo's `Compression` field.
    pub fn nix_name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
            Compression::Lzip => "lzip",
            Compression::Lz4 => "lz4",
            Compression::Brotli => "br",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.nix_name())
    }
}

/// What an object key in a nix-cache bucket is, and so which check its body gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectKind {
    /// `nar/<nix32 sha256>.nar[.<ext>]`: the body must hash to `hash`, as stored or
    /// decompressed.
    Nar {
        /// The sha256 from the name.
        hash: [u8; 32],
        /// The compression the suffix names.
        compression: Compression,
    },
    /// `<hash part>.narinfo`: the body must pass [`super::keys::verify_narinfo`].
    NarInfo {
        /// The 32-character store path hash part from the name.
        hash_part: String,
    },
    /// Anything else (`nix-cache-info`, `<hash>.ls`, `log/…`, `debuginfo/…`,
    /// `realisations/…`, `build-trace-v2/…`): stored without a Nix check. Clients check these
    /// themselves or they are advisory.
    Plain,
}

/// Classifies an object key. Keys under `nar/` or ending in `.narinfo` that are not
/// well-formed NAR or narinfo names are refused rather than stored unchecked: the checks
/// must not be avoidable by a slightly odd name.
pub fn classify_key(key: &str) -> Result<ObjectKind, NixCheckError> {
    let bad = |reason: String| NixCheckError::BadObjectKey {
        key: key.to_string(),
        reason,
    };
    if let Some(file) = key.strip_prefix("nar/") {
        let (hash, suffix) = file
            .split_once(".nar")
            .ok_or_else(|| bad("NAR names are `nar/<nix32 sha256>.nar[.xz|.zst|...]`".into()))?;
        let hash = base32::decode_sha256(hash)
            .map_err(|e| bad(format!("the NAR name's hash is not a nix32 sha256: {e}")))?;
        let compression = Compression::from_suffix(suffix).ok_or_else(|| {
            bad(format!(
                "unknown NAR suffix `.nar{suffix}` (Nix writes .nar, .nar.xz, .nar.zst, \
                 .nar.bz2, .nar.lzip, .nar.lz4, .nar.br)"
            ))
        })?;
        return Ok(ObjectKind::Nar { hash, compression });
    }
    if let Some(hash_part) = key.strip_suffix(".narinfo") {
        check_hash_part(hash_part).map_err(|reason| {
            bad(format!(
                "narinfo names are `<32-character store path hash>.narinfo`: {reason}"
            ))
        })?;
        return Ok(ObjectKind::NarInfo {
            hash_part: hash_part.to_string(),
        });
    }
    let cache_file = key == "nix-cache-info"
        || key
            .strip_suffix(".ls")
            .is_some_and(|hash_part| check_hash_part(hash_part).is_ok())
        || CACHE_FOLDERS.iter().any(|folder| {
            key.strip_prefix(folder)
                .is_some_and(|rest| !rest.is_empty())
        });
    if !cache_file {
        return Err(bad(
            "a binary cache holds only nix-cache-info, <hash>.narinfo, nar/…, <hash>.ls, \
             log/…, debuginfo/…, realisations/… and build-trace-v2/…"
                .into(),
        ));
    }
    Ok(ObjectKind::Plain)
}

/// Folders of a binary cache whose files are stored as they come (logs, debug-info links,
/// realisations in both of Nix's layouts).
const CACHE_FOLDERS: [&str; 4] = ["log/", "debuginfo/", "realisations/", "build-trace-v2/"];

/// Which hash in a NAR's name the body matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NarMatch {
    /// The body as uploaded (Nix's naming: FileHash). For an uncompressed `.nar` this is also
    /// its NAR hash.
    FileHash,
    /// The decompressed body (new Hydra's naming: NarHash).
    NarHash,
}

/// What came of hashing the decompressed stream, for the error when neither hash matched.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decompressed {
    /// The stream decompressed cleanly to data with this sha256.
    Hashed {
        /// The compression decoded.
        compression: Compression,
        /// sha256 of the decompressed data.
        hash: [u8; 32],
    },
    /// The name says the body is not compressed, so there is only one hash.
    NotCompressed,
    /// The compression is recognised but not decoded here.
    Unsupported(Compression),
    /// The stream is corrupt or truncated.
    Failed {
        /// The compression the name claimed.
        compression: Compression,
        /// The decoder's complaint.
        reason: String,
    },
    /// Decompression was stopped at the configured size limit.
    TooLarge {
        /// The compression decoded.
        compression: Compression,
        /// The limit, in decompressed bytes.
        limit: u64,
    },
}

impl fmt::Display for Decompressed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decompressed::Hashed { compression, hash } => write!(
                f,
                "the decompressed {compression} stream to {}",
                base32::format_sha256(hash)
            ),
            Decompressed::NotCompressed => {
                f.write_str("it is not compressed, so it has no other hash")
            }
            Decompressed::Unsupported(c) => write!(
                f,
                "{c} streams are not decompressed here, so only the file hash can match"
            ),
            Decompressed::Failed {
                compression,
                reason,
            } => write!(f, "decompressing it as {compression} failed: {reason}"),
            Decompressed::TooLarge { compression, limit } => write!(
                f,
                "decompressing it as {compression} was stopped at the limit of {limit} bytes"
            ),
        }
    }
}

/// Bounds the memory of one decoder. xz -9 needs 65 MiB and zstd's own default window limit
/// is 128 MiB; nothing Nix or Hydra write needs more.
const DECODER_MEMORY_LIMIT: u64 = 128 << 20;

/// Checks a NAR body against the hash in its name while the gateway streams it elsewhere.
///
/// Push style: feed every chunk to [`update`](Self::update) in order, then call
/// [`finish`](Self::finish). Memory stays bounded (two hash states and one decoder). A
/// corrupt or oversized compressed stream only rules out the NAR-hash match; it is reported by
/// `finish`, never by a panic or an early error.
pub struct NarVerifier {
    expected: [u8; 32],
    file: Sha256,
    inflate: Inflate,
}

enum Inflate {
    Running {
        compression: Compression,
        decoder: Box<Decoder>,
    },
    /// Decided before the end of the body (not compressed, unsupported, failed, too large).
    Stopped(Decompressed),
}

impl NarVerifier {
    /// Default cap on decompressed bytes: beyond it, decoding stops and only the file hash
    /// can match. Well above any real NAR; it bounds the CPU a decompression bomb can take.
    pub const DEFAULT_MAX_DECOMPRESSED: u64 = 64 << 30;

    /// Starts checking a body that must hash to `expected` (from [`ObjectKind::Nar`]).
    pub fn new(expected: [u8; 32], compression: Compression) -> NarVerifier {
        let inflate = match Decoder::new(compression, Self::DEFAULT_MAX_DECOMPRESSED) {
            Some(Ok(decoder)) => Inflate::Running {
                compression,
                decoder: Box::new(decoder),
            },
            Some(Err(e)) => Inflate::Stopped(Decompressed::Failed {
                compression,
                reason: format!("could not start the decoder: {e}"),
            }),
            None if compression == Compression::None => {
                Inflate::Stopped(Decompressed::NotCompressed)
            }
            None => Inflate::Stopped(Decompressed::Unsupported(compression)),
        };
        NarVerifier {
            expected,
            file: Sha256::new(),
            inflate,
        }
    }

    /// Sets the cap on decompressed bytes (default [`Self::DEFAULT_MAX_DECOMPRESSED`]). Call it
    /// before the first [`update`](Self::update).
    pub fn with_max_decompressed_size(mut self, bytes: u64) -> NarVerifier {
        if let Inflate::Running { decoder, .. } = &mut self.inflate {
            decoder.sink_mut().limit = bytes;
        }
        self
    }

    /// Feeds the next chunk of the body, of any size.
    ///
    /// Never fails today: bad compressed data is only reported by [`finish`](Self::finish),
    /// because the body may still match its name as stored. The `Result` leaves room for checks
    /// that can refuse early without changing callers.
    pub fn update(&mut self, chunk: &[u8]) -> Result<(), NixCheckError> {
        self.file.update(chunk);
        if let Inflate::Running {
            compression,
            decoder,
        } = &mut self.inflate
            && let Err(e) = decoder.write_all(chunk)
        {
            self.inflate = Inflate::Stopped(decoder.failure(*compression, e));
        }
        Ok(())
    }

    /// Ends the body and says which hash matched, or why none did (with every hash computed,
    /// in nix32).
    pub fn finish(self) -> Result<NarMatch, NixCheckError> {
        let file_hash: [u8; 32] = self.file.finalize().into();
        if file_hash == self.expected {
            return Ok(NarMatch::FileHash);
        }
        let decompressed = match self.inflate {
            Inflate::Stopped(outcome) => outcome,
            Inflate::Running {
                compression,
                mut decoder,
            } => match decoder.finish() {
                Ok(()) => {
                    let hash = decoder.sink_mut().take_hash();
                    if hash == self.expected {
                        return Ok(NarMatch::NarHash);
                    }
                    Decompressed::Hashed { compression, hash }
                }
                Err(e) => decoder.failure(compression, e),
            },
        };
        Err(NixCheckError::NarMismatch {
            expected: self.expected,
            file_hash,
            decompressed,
        })
    }
}

impl fmt::Debug for NarVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NarVerifier")
            .field("expected", &base32::format_sha256(&self.expected))
            .finish_non_exhaustive()
    }
}

/// Where decompressed bytes go: hashed and counted, never kept.
struct HashSink {
    hasher: Sha256,
    written: u64,
    limit: u64,
    over_limit: bool,
}

impl HashSink {
    fn take_hash(&mut self) -> [u8; 32] {
        std::mem::take(&mut self.hasher).finalize().into()
    }
}

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let total = self.written.saturating_add(buf.len() as u64);
        if total > self.limit {
            // An error (not a short write) makes every decoder stop at once.
            self.over_limit = true;
            return Err(io::Error::other("decompressed size limit reached"));
        }
        self.hasher.update(buf);
        self.written = total;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The push-style decoders, each writing into a [`HashSink`].
enum Decoder {
    Xz(liblzma::write::XzDecoder<HashSink>),
    Zstd(zstd::stream::write::Decoder<'static, HashSink>),
    Bzip2(bzip2::write::BzDecoder<HashSink>),
}

impl Decoder {
    /// `None` when this compression is not decoded here.
    fn new(compression: Compression, limit: u64) -> Option<io::Result<Decoder>> {
        let sink = HashSink {
            hasher: Sha256::new(),
            written: 0,
            limit,
            over_limit: false,
        };
        Some(match compression {
            // Several concatenated xz streams are valid `xz -d` input; accept them likewise.
            Compression::Xz => liblzma::stream::Stream::new_stream_decoder(
                DECODER_MEMORY_LIMIT,
                liblzma::stream::CONCATENATED,
            )
            .map(|s| Decoder::Xz(liblzma::write::XzDecoder::new_stream(sink, s)))
            .map_err(io::Error::other),
            // zstd's decoder continues across concatenated frames by itself (parallel zstd
            // output is several frames) and keeps its default 128 MiB window limit.
            Compression::Zstd => zstd::stream::write::Decoder::new(sink).map(Decoder::Zstd),
            Compression::Bzip2 => Ok(Decoder::Bzip2(bzip2::write::BzDecoder::new(sink))),
            Compression::None | Compression::Lzip | Compression::Lz4 | Compression::Brotli => {
                return None;
            }
        })
    }

    fn write_all(&mut self, chunk: &[u8]) -> io::Result<()> {
        match self {
            Decoder::Xz(d) => d.write_all(chunk),
            Decoder::Zstd(d) => d.write_all(chunk),
            Decoder::Bzip2(d) => d.write_all(chunk),
        }
    }

    /// Ends the stream; fails if it is truncated.
    fn finish(&mut self) -> io::Result<()> {
        match self {
            Decoder::Xz(d) => d.try_finish(),
            Decoder::Zstd(d) => d.do_finish(),
            Decoder::Bzip2(d) => d.try_finish(),
        }
    }

    fn sink_mut(&mut self) -> &mut HashSink {
        match self {
            Decoder::Xz(d) => d.get_mut(),
            Decoder::Zstd(d) => d.get_mut(),
            Decoder::Bzip2(d) => d.get_mut(),
        }
    }

    /// Turns a decoder error into the outcome to report: our own size cap, or bad data.
    fn failure(&mut self, compression: Compression, e: io::Error) -> Decompressed {
        let sink = self.sink_mut();
        if sink.over_limit {
            Decompressed::TooLarge {
                compression,
                limit: sink.limit,
            }
        } else {
            Decompressed::Failed {
                compression,
                reason: e.to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    fn run(
        expected: [u8; 32],
        c: Compression,
        body: &[u8],
        limit: u64,
    ) -> Result<NarMatch, NixCheckError> {
        let mut v = NarVerifier::new(expected, c).with_max_decompressed_size(limit);
        for chunk in body.chunks(1000) {
            v.update(chunk).unwrap();
        }
        v.finish()
    }

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
        match c {
            Compression::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => zstd::encode_all(data, 3).unwrap(),
            Compression::Bzip2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            _ => data.to_vec(),
        }
    }

    const NAR_HASH: &str = "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s";

    #[test]
    fn verifier_can_move_between_threads() {
        // The gateway drives it from async tasks that may hop threads.
        fn assert_send<T: Send>() {}
        assert_send::<NarVerifier>();
    }

    #[test]
    fn classifies_keys() {
        let hash = base32::decode_sha256(NAR_HASH).unwrap();
        for (suffix, compression) in [
            ("", Compression::None),
            (".xz", Compression::Xz),
            (".zst", Compression::Zstd),
            (".bz2", Compression::Bzip2),
            (".br", Compression::Brotli),
            (".lz4", Compression::Lz4),
            (".lzip", Compression::Lzip),
        ] {
            assert_eq!(
                classify_key(&format!("nar/{NAR_HASH}.nar{suffix}")).unwrap(),
                ObjectKind::Nar { hash, compression }
            );
        }
        assert_eq!(
            classify_key("06sgdhf0cy9l42fm8kkja1r089xb4icn.narinfo").unwrap(),
            ObjectKind::NarInfo {
                hash_part: "06sgdhf0cy9l42fm8kkja1r089xb4icn".into()
            }
        );
        for plain in [
            "nix-cache-info",
            "06sgdhf0cy9l42fm8kkja1r089xb4icn.ls",
            "log/06sgdhf0cy9l42fm8kkja1r089xb4icn-hello.drv",
            "debuginfo/0123456789abcdef0123456789abcdef01234567",
            "realisations/sha256:abc!out.doi",
            "build-trace-v2/x.drv/out.doi",
        ] {
            assert_eq!(classify_key(plain).unwrap(), ObjectKind::Plain, "{plain}");
        }
        // Nothing else belongs in a binary cache: refused by name, not stored unchecked.
        for stray in [
            "narx/foo",
            "index.html",
            "nix-cache-info.bak",
            "foo.ls",
            "log/",
            "06sgdhf0cy9l42fm8kkja1r089xb4icn",
        ] {
            let e = classify_key(stray).unwrap_err();
            assert!(
                e.to_string().contains("a binary cache holds only"),
                "{stray}: {e}"
            );
        }
        for bad in [
            format!("nar/{NAR_HASH}.nar.zstd"),
            format!("nar/{NAR_HASH}.nar.gz"),
            format!("nar/{NAR_HASH}"),
            format!("nar/{NAR_HASH}x.nar.xz"),
            format!("nar/{}.nar.xz", &NAR_HASH[..51]),
            format!("nar/sub/{NAR_HASH}.nar.xz"),
            "nar/".to_string(),
            "06sgdhf0cy9l42fm8kkja1r089xb4ice.narinfo".to_string(),
            "foo.narinfo".to_string(),
            "sub/06sgdhf0cy9l42fm8kkja1r089xb4icn.narinfo".to_string(),
        ] {
            let e = classify_key(&bad).unwrap_err();
            assert!(
                matches!(&e, NixCheckError::BadObjectKey { key, .. } if *key == bad),
                "{bad}: {e}"
            );
        }
        let e = classify_key(&format!("nar/{NAR_HASH}.nar.zstd")).unwrap_err();
        assert!(e.to_string().contains(".nar.zst,"), "{e}");
    }

    #[test]
    fn matches_file_hash_or_nar_hash_for_every_decoder() {
        let data = sample();
        for c in [Compression::Xz, Compression::Zstd, Compression::Bzip2] {
            let body = compress(c, &data);
            assert_eq!(
                run(sha(&body), c, &body, u64::MAX),
                Ok(NarMatch::FileHash),
                "{c}"
            );
            assert_eq!(
                run(sha(&data), c, &body, u64::MAX),
                Ok(NarMatch::NarHash),
                "{c}"
            );
            // Exactly at the limit is still fine.
            assert_eq!(
                run(sha(&data), c, &body, data.len() as u64),
                Ok(NarMatch::NarHash),
                "{c}"
            );
        }
        assert_eq!(
            run(sha(&data), Compression::None, &data, 0),
            Ok(NarMatch::FileHash)
        );
    }

    #[test]
    fn stops_decompressing_at_the_limit() {
        let data = sample();
        for c in [Compression::Xz, Compression::Zstd, Compression::Bzip2] {
            let body = compress(c, &data);
            let e = run(sha(&data), c, &body, 1000).unwrap_err();
            assert!(
                matches!(
                    &e,
                    NixCheckError::NarMismatch {
                        decompressed: Decompressed::TooLarge { limit: 1000, .. },
                        ..
                    }
                ),
                "{c}: {e}"
            );
            // The file hash still matches: the limit only removes the NAR-hash path.
            assert_eq!(run(sha(&body), c, &body, 1000), Ok(NarMatch::FileHash));
        }
    }

    #[test]
    fn corrupt_truncated_or_padded_streams_only_fail_at_finish() {
        let data = sample();
        for c in [Compression::Xz, Compression::Zstd, Compression::Bzip2] {
            let body = compress(c, &data);
            let mut garbled = body.clone();
            for b in garbled.iter_mut().skip(20).step_by(7) {
                *b ^= 0x5a;
            }
            let truncated = &body[..body.len() - 3];
            let mut trailing = body.clone();
            trailing.extend_from_slice(b"trailing garbage");
            for (what, bad) in [
                ("garbled", &garbled[..]),
                ("truncated", truncated),
                ("trailing", &trailing[..]),
                ("empty", &[][..]),
            ] {
                let e = run(sha(&data), c, bad, u64::MAX).unwrap_err();
                let NixCheckError::NarMismatch { decompressed, .. } = &e else {
                    panic!("{c} {what}: {e}");
                };
                // Without a checksum (zstd's default) garbled data may still decode, to
                // other bytes; framing damage must always be caught by the decoder.
                let caught = matches!(decompressed, Decompressed::Failed { .. })
                    || (what == "garbled" && matches!(decompressed, Decompressed::Hashed { .. }));
                assert!(caught, "{c} {what}: {e}");
                // Stored as is, the same bytes still verify by file hash.
                assert_eq!(run(sha(bad), c, bad, u64::MAX), Ok(NarMatch::FileHash));
            }
        }
    }

    #[test]
    fn mismatch_error_names_all_hashes() {
        let data = sample();
        let body = compress(Compression::Zstd, &data);
        let e = run([0; 32], Compression::Zstd, &body, u64::MAX).unwrap_err();
        let text = e.to_string();
        for h in [[0; 32], sha(&body), sha(&data)] {
            assert!(text.contains(&base32::format_sha256(&h)), "{text}");
        }
        assert!(text.contains("decompressed zstd stream"), "{text}");

        let e = run([0; 32], Compression::Brotli, &body, u64::MAX).unwrap_err();
        assert!(
            e.to_string().contains("br streams are not decompressed"),
            "{e}"
        );
        let e = run([0; 32], Compression::None, &body, u64::MAX).unwrap_err();
        assert!(e.to_string().contains("not compressed"), "{e}");
    }
}
