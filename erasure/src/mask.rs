//! Masking a segment before it is coded, so that what nodes store cannot be recomputed from
//! the public object.
//!
//! Every object in a Nix cache is public. Were shards a function of the object alone, a node
//! could delete its shards and, when audited, fetch the object, encode it again and answer
//! from the result. Instead the gateway XORs each segment with a keystream that only the
//! coordinator and gateways can compute (a cluster [`MaskKey`] and a random per-segment
//! [`SegmentNonce`]) *before* parity and roots are computed: every shard, data or parity,
//! is then a function of masked bytes that exist nowhere but on the nodes.
//!
//! The keystream is ChaCha20 under a per-segment key `BLAKE3-keyed(mask key, nonce)`, at
//! stream position = byte offset in the segment's padded buffer. It is seekable, so a range
//! read unmasks only the bytes it read. (BLAKE3's own XOF was measured too: only its AVX-512
//! code emits several blocks at once, elsewhere it is ~4× slower than ChaCha20; see
//! `docs/benchmarks.md`, "Masked segments".)

use std::fmt;

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};

use crate::MaskError;

/// BLAKE3 `derive_key` context under which the coordinator turns its secret key into the
/// cluster's [`MaskKey`]. Changing it changes the key and makes every masked segment
/// unreadable, so it is versioned, never edited.
pub const MASK_KEY_CONTEXT: &str = "cairn 2026 segment mask key v1";

/// The cluster's 32-byte masking key, shared by the coordinator members and gateways and
/// never given to nodes.
///
/// `Debug` does not print it: a node that learns it can recompute its shards from the
/// public object and pass audits without storing anything.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MaskKey([u8; 32]);

impl MaskKey {
    /// Wraps key bytes (for example derived with [`MASK_KEY_CONTEXT`]).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh random key, for tests and benchmarks; a cluster derives its key from the
    /// coordinator's secret instead, so every member computes the same one.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// The keystream of the segment with `nonce`, positioned at offset 0.
    pub fn keystream(&self, nonce: &SegmentNonce) -> Keystream {
        // A key per segment, so the 96-bit ChaCha nonce can stay fixed and the 128-bit
        // random segment nonce is what keeps keystreams apart.
        let segment_key = blake3::keyed_hash(&self.0, &nonce.0);
        Keystream {
            cipher: ChaCha20::new(segment_key.as_bytes().into(), &[0u8; 12].into()),
        }
    }

    /// XORs the keystream of segment `nonce` at bytes `offset..offset + buf.len()` into
    /// `buf`: masks plain bytes, unmasks masked ones (the operation is its own inverse).
    pub fn apply(
        &self,
        nonce: &SegmentNonce,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), MaskError> {
        let mut stream = self.keystream(nonce);
        stream.seek(offset)?;
        stream.apply(buf)
    }
}

impl fmt::Debug for MaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MaskKey(..)")
    }
}

/// The random 16 bytes that, with the [`MaskKey`], select one segment's keystream. Stored
/// in the catalog with the segment; not secret.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct SegmentNonce([u8; 16]);

impl SegmentNonce {
    /// A fresh nonce from the operating system's generator; every segment gets its own, so
    /// two segments with the same bytes are still stored differently.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// Wraps nonce bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Debug for SegmentNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SegmentNonce(")?;
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        f.write_str(")")
    }
}

/// One segment's keystream with a position; each [`Keystream::apply`] continues where the
/// previous one ended, which is how the encoder masks a shard stripe after stripe.
pub struct Keystream {
    cipher: ChaCha20,
}

impl Keystream {
    /// Moves to byte `offset` of the segment.
    pub fn seek(&mut self, offset: u64) -> Result<(), MaskError> {
        self.cipher
            .try_seek(offset)
            .map_err(|_| MaskError::OutOfRange { offset, len: 0 })
    }

    /// XORs the next `buf.len()` keystream bytes into `buf`.
    pub fn apply(&mut self, buf: &mut [u8]) -> Result<(), MaskError> {
        let offset: u64 = self.cipher.current_pos();
        self.cipher
            .try_apply_keystream(buf)
            .map_err(|_| MaskError::OutOfRange {
                offset,
                len: buf.len() as u64,
            })
    }
}

impl fmt::Debug for Keystream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keystream").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 97) as u8).collect()
    }

    fn key(byte: u8) -> MaskKey {
        MaskKey::from_bytes([byte; 32])
    }

    #[test]
    fn applying_twice_is_identity() {
        let (key, nonce) = (key(1), SegmentNonce::from_bytes([2; 16]));
        let plain = bytes(10_000);
        let mut buf = plain.clone();
        key.apply(&nonce, 0, &mut buf).unwrap();
        assert_ne!(buf, plain);
        key.apply(&nonce, 0, &mut buf).unwrap();
        assert_eq!(buf, plain);
    }

    #[test]
    fn a_slice_at_an_offset_matches_the_whole_buffer() {
        let (key, nonce) = (key(3), SegmentNonce::from_bytes([4; 16]));
        let plain = bytes(5_000);
        let mut whole = plain.clone();
        key.apply(&nonce, 0, &mut whole).unwrap();
        // Offsets inside ChaCha blocks and across them, empty and one-byte slices.
        for (start, end) in [
            (0, 1),
            (1, 64),
            (63, 65),
            (100, 100),
            (777, 4321),
            (4999, 5000),
        ] {
            let mut part = plain[start..end].to_vec();
            key.apply(&nonce, start as u64, &mut part).unwrap();
            assert_eq!(part, whole[start..end], "{start}..{end}");
        }
        // A stream applied piece by piece equals one application.
        let mut pieces = plain.clone();
        let mut stream = key.keystream(&nonce);
        for chunk in pieces.chunks_mut(333) {
            stream.apply(chunk).unwrap();
        }
        assert_eq!(pieces, whole);
    }

    #[test]
    fn other_nonces_and_keys_give_other_streams() {
        let plain = vec![0u8; 4096];
        let masked = |key: &MaskKey, nonce: [u8; 16]| {
            let mut buf = plain.clone();
            key.apply(&SegmentNonce::from_bytes(nonce), 0, &mut buf)
                .unwrap();
            buf
        };
        let base = masked(&key(5), [6; 16]);
        let mut other_nonce = [6; 16];
        other_nonce[15] ^= 1;
        assert_ne!(base, masked(&key(5), other_nonce));
        assert_ne!(base, masked(&key(7), [6; 16]));
        assert_ne!(base, plain);
        // Random nonces and keys differ from each other too.
        assert_ne!(
            SegmentNonce::random().unwrap(),
            SegmentNonce::random().unwrap()
        );
        assert_ne!(MaskKey::random().unwrap(), MaskKey::random().unwrap());
    }

    #[test]
    fn offsets_past_the_keystream_are_errors() {
        let (key, nonce) = (key(8), SegmentNonce::from_bytes([9; 16]));
        // ChaCha20's 32-bit block counter ends at 256 GiB, far past any segment.
        let end = 64u64 << 32;
        let mut buf = [0u8; 16];
        assert!(key.apply(&nonce, 64 << 30, &mut buf).is_ok());
        assert!(matches!(
            key.apply(&nonce, end, &mut buf),
            Err(MaskError::OutOfRange { .. })
        ));
        assert!(key.apply(&nonce, u64::MAX, &mut buf).is_err());
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let text = format!("{:?}", key(0xab));
        assert_eq!(text, "MaskKey(..)");
        assert!(format!("{:?}", SegmentNonce::from_bytes([0xcd; 16])).contains("cdcd"));
    }
}
