//! Cache signing keys and narinfo signature checks.
//!
//! A Nix cache key is `name:base64(32-byte ed25519 public key)`; a narinfo carries
//! `Sig: name:base64(64-byte signature)` lines over its [`NarInfo::fingerprint`]. Nix looks
//! the key up by name, so a signature counts only if its name is a trusted key's name *and*
//! it verifies under that key.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, VerifyingKey};

use super::NixCheckError;
use super::narinfo::NarInfo;

/// A public key whose signatures the bucket accepts (e.g. `cache.nixos.org-1:6NCH…`).
#[derive(Clone, PartialEq, Eq)]
pub struct TrustedKey {
    name: String,
    key: VerifyingKey,
}

impl TrustedKey {
    /// Parses `name:base64`, the form `nix key convert-secret-to-public` prints and
    /// `trusted-public-keys` takes. Surrounding whitespace (a trailing newline from a key
    /// file) is ignored.
    pub fn parse(s: &str) -> Result<TrustedKey, NixCheckError> {
        let s = s.trim();
        let invalid = |name: &str, reason: &str| NixCheckError::InvalidTrustedKey {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        let (name, b64) = s
            .split_once(':')
            .ok_or_else(|| invalid("", "expected `<name>:<base64 key>`"))?;
        if name.is_empty() {
            return Err(invalid(name, "the key name is empty"));
        }
        let bytes = BASE64
            .decode(b64)
            .map_err(|e| invalid(name, &format!("invalid base64: {e}")))?;
        let bytes: [u8; 32] = match bytes.try_into() {
            Ok(b) => b,
            Err(b) if b.len() == 64 => {
                return Err(invalid(
                    name,
                    "decodes to 64 bytes: this looks like a secret key, a public key has 32",
                ));
            }
            Err(b) => {
                return Err(invalid(
                    name,
                    &format!("decodes to {} bytes, an ed25519 public key has 32", b.len()),
                ));
            }
        };
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| invalid(name, "not a valid ed25519 public key"))?;
        // A small-order key would accept forged signatures under non-strict verification;
        // refuse it at configuration time rather than relying on every check being strict.
        if key.is_weak() {
            return Err(invalid(name, "weak (small-order) ed25519 public key"));
        }
        Ok(TrustedKey {
            name: name.to_string(),
            key,
        })
    }

    /// The key name, as it appears before the `:` in `Sig` lines.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl FromStr for TrustedKey {
    type Err = NixCheckError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TrustedKey::parse(s)
    }
}

impl fmt::Display for TrustedKey {
    /// Prints the key back as `name:base64`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, BASE64.encode(self.key.as_bytes()))
    }
}

impl fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustedKey({self})")
    }
}

/// A narinfo that passed [`verify_narinfo`]; only that function makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedNarInfo {
    narinfo: NarInfo,
    key_name: String,
}

impl VerifiedNarInfo {
    /// The parsed narinfo.
    pub fn narinfo(&self) -> &NarInfo {
        &self.narinfo
    }

    /// Name of the trusted key whose signature verified (the first one found).
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// Gives up the proof and keeps the narinfo.
    pub fn into_narinfo(self) -> NarInfo {
        self.narinfo
    }
}

/// Checks a narinfo upload: `object_name` is the object key it is stored under (must be
/// `<hash part of its StorePath>.narinfo`), `text` the body. Accepted only if at least one
/// `Sig` line is a valid ed25519 signature over the fingerprint by a trusted key of the same
/// name. Signatures by unknown names are ignored, as Nix does.
pub fn verify_narinfo(
    object_name: &str,
    text: &[u8],
    trusted: &[TrustedKey],
) -> Result<VerifiedNarInfo, NixCheckError> {
    let narinfo = NarInfo::parse(text)?;

    let expected_name = format!("{}.narinfo", narinfo.hash_part());
    if object_name != expected_name {
        return Err(NixCheckError::NarInfoNameMismatch {
            object_name: object_name.to_string(),
            store_path: narinfo.store_path.clone(),
            expected_name,
        });
    }

    if narinfo.sigs.is_empty() {
        return Err(NixCheckError::NoSignature);
    }

    let fingerprint = narinfo.fingerprint();
    let mut signed_by = Vec::new();
    let mut first_failure = None;
    for sig in &narinfo.sigs {
        // The parser already refused Sig values without `name:`.
        let Some((name, b64)) = sig.split_once(':') else {
            continue;
        };
        signed_by.push(name.to_string());
        let keys: Vec<&TrustedKey> = trusted.iter().filter(|k| k.name == name).collect();
        if keys.is_empty() {
            continue;
        }
        match check_signature(&keys, b64, fingerprint.as_bytes()) {
            Ok(()) => {
                return Ok(VerifiedNarInfo {
                    key_name: name.to_string(),
                    narinfo,
                });
            }
            Err(reason) => {
                first_failure.get_or_insert(NixCheckError::BadSignature {
                    key_name: name.to_string(),
                    reason,
                });
            }
        }
    }

    Err(
        first_failure.unwrap_or_else(|| NixCheckError::NoTrustedSignature {
            signed_by,
            trusted: trusted.iter().map(|k| k.name.clone()).collect(),
        }),
    )
}

/// Checks one signature against every trusted key of its name (several keys may share a name
/// while a key is being replaced).
fn check_signature(keys: &[&TrustedKey], b64: &str, message: &[u8]) -> Result<(), String> {
    let bytes = BASE64
        .decode(b64)
        .map_err(|e| format!("the signature is not valid base64: {e}"))?;
    let bytes: [u8; 64] = bytes.try_into().map_err(|b: Vec<u8>| {
        format!(
            "the signature decodes to {} bytes, an ed25519 signature has 64",
            b.len()
        )
    })?;
    let signature = Signature::from_bytes(&bytes);
    // Strict verification refuses malleable and small-order encodings, like libsodium,
    // which is what Nix verifies with.
    if keys
        .iter()
        .any(|k| k.key.verify_strict(message, &signature).is_ok())
    {
        Ok(())
    } else {
        Err("ed25519 verification failed over the fingerprint \
             (StorePath, NarHash, NarSize, References)"
            .to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A narinfo written by Nix 2.8 (reference/nix-cache.md §2) without its Sig line; the tests
    // sign it with keys made from fixed seeds. Real Nix signatures are checked in
    // tests/nix_checks.rs.
    const SAMPLE: &str = "StorePath: /nix/store/06sgdhf0cy9l42fm8kkja1r089xb4icn-a.txt
URL: nar/1givpmp5xk3xfiybxxjx3a6m9hp4alqh5j5nap50bi00abiqnj54.nar.zst
Compression: zstd
NarHash: sha256:01mjdvbjh93fwd9gigbpfgalkj9dm9rk8p2f949n8xfd94xlqy97
NarSize: 168
References: 3hnizkglw91wg5qdfp9hklqx5kll6qph-b.txt
";

    fn key(name: &str, seed: u8) -> (ed25519_dalek::SigningKey, TrustedKey) {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let pk = format!("{name}:{}", BASE64.encode(sk.verifying_key().as_bytes()));
        (sk, pk.parse().unwrap())
    }

    fn signed(sk: &ed25519_dalek::SigningKey, name: &str) -> String {
        use ed25519_dalek::Signer as _;
        let n = NarInfo::parse(SAMPLE.as_bytes()).unwrap();
        let sig = sk.sign(n.fingerprint().as_bytes());
        format!("{SAMPLE}Sig: {name}:{}\n", BASE64.encode(sig.to_bytes()))
    }

    const NAME: &str = "06sgdhf0cy9l42fm8kkja1r089xb4icn.narinfo";

    #[test]
    fn parses_and_prints_keys() {
        let (_, k) = key("cache-1", 7);
        assert_eq!(k.name(), "cache-1");
        assert_eq!(TrustedKey::parse(&format!("{k}\n")).unwrap(), k);
        assert!(format!("{k:?}").starts_with("TrustedKey(cache-1:"));
    }

    #[test]
    fn refuses_bad_keys_without_echoing_them() {
        let secret = format!("c:{}", BASE64.encode([1u8; 64]));
        let e = TrustedKey::parse(&secret).unwrap_err();
        assert!(e.to_string().contains("secret key"), "{e}");
        assert!(!e.to_string().contains(&BASE64.encode([1u8; 64])));
        for bad in ["nocolon", ":AAAA", "c:!!!", "c:AAAA"] {
            assert!(
                matches!(
                    TrustedKey::parse(bad),
                    Err(NixCheckError::InvalidTrustedKey { .. })
                ),
                "{bad}"
            );
        }
        // The identity point is a valid encoding but of small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let e = TrustedKey::parse(&format!("c:{}", BASE64.encode(identity))).unwrap_err();
        assert!(e.to_string().contains("weak"), "{e}");
    }

    #[test]
    fn accepts_a_good_signature_among_others() {
        let (sk, k) = key("cache-1", 1);
        let (other_sk, other) = key("other-1", 2);
        let text = signed(&other_sk, "other-1") + &signed(&sk, "cache-1")[SAMPLE.len()..];
        let v = verify_narinfo(NAME, text.as_bytes(), std::slice::from_ref(&k)).unwrap();
        assert_eq!(v.key_name(), "cache-1");
        assert_eq!(v.narinfo().nar_size, 168);
        let v = verify_narinfo(NAME, text.as_bytes(), &[other, k]).unwrap();
        assert_eq!(v.key_name(), "other-1");
    }

    #[test]
    fn refuses_each_failure_with_its_own_error() {
        let (sk, k) = key("cache-1", 1);
        let (_, impostor) = key("cache-1", 3);
        let (_, other) = key("other-1", 2);
        let good = signed(&sk, "cache-1");

        assert_eq!(
            verify_narinfo(NAME, SAMPLE.as_bytes(), std::slice::from_ref(&k)),
            Err(NixCheckError::NoSignature)
        );
        let e = verify_narinfo(NAME, good.as_bytes(), std::slice::from_ref(&other)).unwrap_err();
        assert_eq!(
            e,
            NixCheckError::NoTrustedSignature {
                signed_by: vec!["cache-1".into()],
                trusted: vec!["other-1".into()]
            }
        );
        assert_eq!(
            e.to_string(),
            "narinfo has no signature by a trusted key: signed by [cache-1], \
             trusted keys are [other-1]"
        );
        let e = verify_narinfo(NAME, good.as_bytes(), &[impostor]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("signature by trusted key cache-1 does not verify"),
            "{e}"
        );
        let tampered = good.replace("NarSize: 168", "NarSize: 169");
        assert!(matches!(
            verify_narinfo(NAME, tampered.as_bytes(), std::slice::from_ref(&k)),
            Err(NixCheckError::BadSignature { .. })
        ));
        let short_sig = format!("{SAMPLE}Sig: cache-1:AAAA\n");
        let e = verify_narinfo(NAME, short_sig.as_bytes(), std::slice::from_ref(&k)).unwrap_err();
        assert!(e.to_string().contains("decodes to 3 bytes"), "{e}");
        let e = verify_narinfo("x.narinfo", good.as_bytes(), std::slice::from_ref(&k)).unwrap_err();
        assert!(matches!(e, NixCheckError::NarInfoNameMismatch { .. }));
        let e = verify_narinfo(NAME, b"junk\n", &[k]).unwrap_err();
        assert!(e.to_string().starts_with("narinfo malformed: "), "{e}");
    }
}
