//! Nix's base32 ("nix32") and the hash strings found in narinfos and object names.
//!
//! Nix's base32 is not RFC 4648: it drops the letters `e o u t` (so hashes cannot spell
//! words) and writes the *last* 5-bit group first, taking bits least-significant first. A
//! sha256 is 52 characters, a store path hash (160 bits) 32.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// The 32 digits, in value order.
const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Why a hash string or nix32 string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// No `<algorithm>:` or `<algorithm>-` prefix.
    #[error("hash `{input}` has no `sha256:` or `sha256-` prefix")]
    MissingAlgorithm {
        /// The string as given.
        input: String,
    },
    /// Another algorithm than sha256 (Nix allows md5, sha1, sha512 in some places).
    #[error("hash algorithm `{algorithm}` is not accepted here, only sha256")]
    UnsupportedAlgorithm {
        /// The prefix found.
        algorithm: String,
    },
    /// The digits after `sha256:` have a length that no encoding of 32 bytes has.
    #[error(
        "sha256 hash has {found} characters after the prefix; \
         expected 52 (nix32), 64 (hex) or 44 (base64)"
    )]
    WrongLength {
        /// Number of characters found.
        found: usize,
    },
    /// A nix32 string whose length no byte string encodes to.
    #[error("{found} characters is not the length of any nix32 string")]
    BadNix32Length {
        /// Number of characters found.
        found: usize,
    },
    /// A character outside the encoding's alphabet.
    #[error("invalid {encoding} character {character:?} at position {position}")]
    BadCharacter {
        /// `nix32` or `hex`.
        encoding: &'static str,
        /// The offending character.
        character: char,
        /// Its 0-based character position.
        position: usize,
    },
    /// A nix32 string whose unused top bits are not zero. Nix refuses these too; accepting
    /// them would give one hash several names.
    #[error("nix32 string sets bits beyond the end of the hash (not canonical)")]
    NonCanonical,
    /// Invalid base64 (including non-canonical padding or trailing bits).
    #[error("invalid base64: {reason}")]
    BadBase64 {
        /// What the base64 decoder said.
        reason: String,
    },
    /// Base64 that decodes to another length than 32 bytes.
    #[error("base64 decodes to {found} bytes, a sha256 has 32")]
    WrongDecodedLength {
        /// Bytes decoded.
        found: usize,
    },
}

/// Number of nix32 characters that encode `bytes` bytes.
fn encoded_len(bytes: usize) -> usize {
    if bytes == 0 {
        0
    } else {
        (bytes * 8 - 1) / 5 + 1
    }
}

/// Encodes bytes in Nix's base32, exactly as Nix prints hashes and store path hash parts.
pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let bit = n * 5;
        let (i, j) = (bit / 8, bit % 8);
        let low = u16::from(bytes.get(i).copied().unwrap_or(0)) >> j;
        let high = u16::from(bytes.get(i + 1).copied().unwrap_or(0)) << (8 - j);
        out.push(char::from(ALPHABET[usize::from((low | high) & 0x1f)]));
    }
    out
}

/// Decodes Nix's base32. The length fixes the number of bytes; strings that are not the
/// canonical encoding of some byte string (impossible length, unused bits set) are refused,
/// so every byte string has exactly one accepted spelling.
pub fn decode(s: &str) -> Result<Vec<u8>, HashError> {
    let digits = s.as_bytes();
    let len = digits.len() * 5 / 8;
    if encoded_len(len) != digits.len() {
        return Err(HashError::BadNix32Length {
            found: digits.len(),
        });
    }
    let mut out = vec![0u8; len];
    for (position, &c) in digits.iter().enumerate() {
        let value = ALPHABET
            .iter()
            .position(|&a| a == c)
            .ok_or(HashError::BadCharacter {
                encoding: "nix32",
                character: char::from(c),
                position,
            })?;
        // The first character carries the highest bits: walk offsets from the end.
        let bit = (digits.len() - 1 - position) * 5;
        let (i, j) = (bit / 8, bit % 8);
        let shifted = (value as u16) << j;
        let [lo, hi] = shifted.to_le_bytes();
        match out.get_mut(i) {
            Some(b) => *b |= lo,
            None if lo != 0 => return Err(HashError::NonCanonical),
            None => {}
        }
        match out.get_mut(i + 1) {
            Some(b) => *b |= hi,
            None if hi != 0 => return Err(HashError::NonCanonical),
            None => {}
        }
    }
    Ok(out)
}

/// Decodes a bare 52-character nix32 sha256 (as in `nar/<hash>.nar.xz`).
pub fn decode_sha256(s: &str) -> Result<[u8; 32], HashError> {
    if s.len() != encoded_len(32) {
        return Err(HashError::WrongLength { found: s.len() });
    }
    to_array(decode(s)?)
}

/// Parses a sha256 in any of the forms Nix accepts in a narinfo: `sha256:<nix32>`,
/// `sha256:<hex>`, `sha256:<base64>` (told apart by length, as Nix does) and SRI
/// `sha256-<base64>`.
pub fn parse_sha256(s: &str) -> Result<[u8; 32], HashError> {
    if let Some(rest) = s.strip_prefix("sha256:") {
        match rest.len() {
            52 => decode_sha256(rest),
            64 => decode_hex(rest),
            44 => decode_base64(rest),
            found => Err(HashError::WrongLength { found }),
        }
    } else if let Some(rest) = s.strip_prefix("sha256-") {
        decode_base64(rest)
    } else {
        match s.find([':', '-']) {
            Some(at) => Err(HashError::UnsupportedAlgorithm {
                algorithm: s[..at].to_string(),
            }),
            None => Err(HashError::MissingAlgorithm {
                input: s.to_string(),
            }),
        }
    }
}

/// Formats a sha256 the way Nix prints it in narinfos and signs it: `sha256:<nix32>`.
pub fn format_sha256(hash: &[u8; 32]) -> String {
    format!("sha256:{}", encode(hash))
}

fn decode_hex(s: &str) -> Result<[u8; 32], HashError> {
    let mut out = [0u8; 32];
    let digits = s.as_bytes();
    for (position, &c) in digits.iter().enumerate() {
        // Nix's base16 decoder takes both cases.
        let value = (c as char).to_digit(16).ok_or(HashError::BadCharacter {
            encoding: "hex",
            character: char::from(c),
            position,
        })?;
        if let Some(b) = out.get_mut(position / 2) {
            let shift = if position % 2 == 0 { 4 } else { 0 };
            *b |= (value as u8) << shift;
        } else {
            return Err(HashError::WrongLength {
                found: digits.len(),
            });
        }
    }
    Ok(out)
}

fn decode_base64(s: &str) -> Result<[u8; 32], HashError> {
    let bytes = BASE64.decode(s).map_err(|e| HashError::BadBase64 {
        reason: e.to_string(),
    })?;
    to_array(bytes)
}

fn to_array(bytes: Vec<u8>) -> Result<[u8; 32], HashError> {
    let found = bytes.len();
    bytes
        .try_into()
        .map_err(|_| HashError::WrongDecodedLength { found })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // Each pair from `nix-hash --type <t> --to-base32 <hex>` (Nix 2.8).
    const VECTORS: &[(&str, &str)] = &[
        (
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
        ),
        (
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s",
        ),
        (
            "0000000000000000000000000000000000000000000000000000000000000001",
            "0080000000000000000000000000000000000000000000000000",
        ),
        (
            "8000000000000000000000000000000000000000000000000000000000000000",
            "0000000000000000000000000000000000000000000000000040",
        ),
        (
            "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "1zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
        ),
        // sha1 ("abc"): 20 bytes, the length of a store path hash part.
        (
            "a9993e364706816aba3e25717850c26c9cd0d89d",
            "kpcd173cq987hw957sx6m0868wv3x6d9",
        ),
        // md5 (""): 16 bytes.
        (
            "d41d8cd98f00b204e9800998ecf8427e",
            "3y8bwfr609h3lh9ch0izcqq7fl",
        ),
    ];

    #[test]
    fn known_vectors_encode_and_decode() {
        for (h, b32) in VECTORS {
            assert_eq!(encode(&hex(h)), *b32, "encode {h}");
            assert_eq!(decode(b32).unwrap(), hex(h), "decode {b32}");
        }
    }

    #[test]
    fn round_trips_every_length() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for len in 0..80usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let s = encode(&bytes);
            assert_eq!(s.len(), encoded_len(len));
            assert_eq!(decode(&s).unwrap(), bytes, "length {len}");
        }
    }

    #[test]
    fn alphabet_has_32_distinct_digits_without_e_o_u_t() {
        let mut seen = std::collections::BTreeSet::new();
        for c in ALPHABET {
            assert!(seen.insert(c));
            assert!(!b"eout".contains(c));
        }
        assert_eq!(seen.len(), 32);
    }

    #[test]
    fn refuses_bad_characters_lengths_and_unused_bits() {
        let good = "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73";
        let with_e = format!("e{}", &good[1..]);
        assert_eq!(
            decode(&with_e),
            Err(HashError::BadCharacter {
                encoding: "nix32",
                character: 'e',
                position: 0
            })
        );
        // 52 digits hold 260 bits; the top 4 must be zero, so a leading digit above 1 is refused.
        let top = format!("2{}", &good[1..]);
        assert_eq!(decode(&top), Err(HashError::NonCanonical));
        assert_eq!(
            decode(&good[1..]),
            Err(HashError::BadNix32Length { found: 51 })
        );
        assert_eq!(decode("").unwrap(), Vec::<u8>::new());
        assert_eq!(
            decode_sha256("kpcd173cq987hw957sx6m0868wv3x6d9"),
            Err(HashError::WrongLength { found: 32 })
        );
    }

    #[test]
    fn parses_every_sha256_spelling_nix_accepts() {
        let bytes: [u8; 32] =
            hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
                .try_into()
                .unwrap();
        for s in [
            "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
            "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
        ] {
            assert_eq!(parse_sha256(s), Ok(bytes), "{s}");
        }
        assert_eq!(
            format_sha256(&bytes),
            "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
    }

    #[test]
    fn refuses_other_algorithms_and_malformed_hashes() {
        assert_eq!(
            parse_sha256("sha512:abc"),
            Err(HashError::UnsupportedAlgorithm {
                algorithm: "sha512".into()
            })
        );
        assert_eq!(
            parse_sha256("md5-1B2M2Y8AsgTpgAmY7PhCfg=="),
            Err(HashError::UnsupportedAlgorithm {
                algorithm: "md5".into()
            })
        );
        assert!(matches!(
            parse_sha256("0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"),
            Err(HashError::MissingAlgorithm { .. })
        ));
        assert_eq!(
            parse_sha256("sha256:abc"),
            Err(HashError::WrongLength { found: 3 })
        );
        assert!(matches!(
            parse_sha256("sha256:g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            Err(HashError::BadCharacter {
                encoding: "hex",
                character: 'g',
                position: 0
            })
        ));
        assert!(matches!(
            parse_sha256("sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"),
            Err(HashError::BadBase64 { .. })
        ));
        assert_eq!(
            parse_sha256("sha256-AAAA"),
            Err(HashError::WrongDecodedLength { found: 3 })
        );
    }
}
