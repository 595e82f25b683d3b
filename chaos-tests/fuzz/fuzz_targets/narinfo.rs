//! The narinfo parser (`NarInfo::parse`), its fingerprint, and the gateway's signature check
//! (`verify_narinfo`), on bytes an uploader sends to a nix-cache bucket.
//!
//! Two trusted keys: `test-cache-1`, the real key that signed the narinfos in
//! `s3-api/tests/fixtures/nix/` (its secret is gone), and `fuzz-cache-1`, whose secret this
//! target holds. Besides "never panic", for every input that parses:
//! - parsing is deterministic, and so is the fingerprint, which starts with the store path;
//! - the parsed narinfo written back (`Display`) parses to the same value and text;
//! - stored under any other name than `<hash part>.narinfo` it is refused;
//! - if it is accepted as it is, the signing key is `test-cache-1` and the fingerprint one
//!   that key really signed (anything else is a forged narinfo accepted);
//! - with a `Sig` line by `fuzz-cache-1` over its fingerprint appended, it is accepted.

#![no_main]

use std::sync::LazyLock;

use cairn_fuzz::{
    FUZZ_CACHE_NAME, REAL_CACHE_KEY, REAL_SIGNED_FINGERPRINTS, fuzz_cache_public, fuzz_cache_sig,
    limit_allocations,
};
use cairn_gateway::nix::keys::{TrustedKey, verify_narinfo};
use cairn_gateway::nix::narinfo::NarInfo;
use libfuzzer_sys::fuzz_target;

static TRUSTED: LazyLock<Vec<TrustedKey>> = LazyLock::new(|| {
    vec![
        TrustedKey::parse(REAL_CACHE_KEY).expect("the fixtures' key parses"),
        TrustedKey::parse(&fuzz_cache_public()).expect("the fuzz key parses"),
    ]
});

fuzz_target!(
    init: {
        limit_allocations(16 << 20);
        LazyLock::force(&TRUSTED);
    },
    |data: &[u8]| {
        let parsed = NarInfo::parse(data);
        assert_eq!(parsed, NarInfo::parse(data), "parsing is not deterministic");
        match parsed {
            Ok(info) => check_parsed(data, &info),
            Err(_) => assert!(verify_narinfo("x.narinfo", data, &TRUSTED).is_err()),
        }
    }
);

fn check_parsed(data: &[u8], info: &NarInfo) {
    let fingerprint = info.fingerprint();
    assert_eq!(
        fingerprint,
        info.fingerprint(),
        "fingerprint not deterministic"
    );
    assert!(
        fingerprint.starts_with(&format!("1;{};sha256:", info.store_path)),
        "{fingerprint}"
    );
    let hash_part = info.hash_part();
    assert_eq!(hash_part.len(), 32, "{info:?}");
    assert!(info.store_dir().starts_with('/'), "{info:?}");
    assert!(info.nar_size > 0 && !info.url.is_empty() && !info.compression.is_empty());

    let text = info.to_string();
    let back = NarInfo::parse(text.as_bytes())
        .unwrap_or_else(|e| panic!("{info:?} written back as {text:?} does not parse: {e}"));
    assert_eq!(&back, info, "written back as {text:?}");
    assert_eq!(back.to_string(), text);

    let name = format!("{hash_part}.narinfo");
    if let Ok(verified) = verify_narinfo(&name, data, &TRUSTED) {
        assert_eq!(verified.narinfo(), info);
        assert!(
            verified.key_name() == "test-cache-1"
                && REAL_SIGNED_FINGERPRINTS.contains(&fingerprint.as_str()),
            "FORGERY: accepted as signed by {} with fingerprint {fingerprint}",
            verified.key_name()
        );
    }
    assert!(verify_narinfo(&format!("x{name}"), data, &TRUSTED).is_err());

    let mut signed = data.to_vec();
    signed.extend_from_slice(format!("Sig: {}\n", fuzz_cache_sig(&fingerprint)).as_bytes());
    match verify_narinfo(&name, &signed, &TRUSTED) {
        Ok(verified) => assert!(
            [FUZZ_CACHE_NAME, "test-cache-1"].contains(&verified.key_name()),
            "{}",
            verified.key_name()
        ),
        Err(e) => panic!("a narinfo with a good {FUZZ_CACHE_NAME} signature is refused: {e}"),
    }
}
