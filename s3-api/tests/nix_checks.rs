//! The Nix checks against real files written by Nix (see tests/fixtures/nix/README.md):
//! four file:// caches of the same three store paths (xz, zstd, bzip2, uncompressed),
//! signed by `test-cache-1`.

use std::fs;
use std::path::{Path, PathBuf};

use cairn_gateway::nix::NixCheckError;
use cairn_gateway::nix::base32::{self, format_sha256};
use cairn_gateway::nix::keys::{TrustedKey, verify_narinfo};
use cairn_gateway::nix::nar::{Decompressed, NarMatch, NarVerifier, ObjectKind, classify_key};
use cairn_gateway::nix::narinfo::{NarInfo, NarInfoError};

const CACHES: [&str; 4] = ["xz", "zstd", "bzip2", "none"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nix")
}

fn key(file: &str) -> TrustedKey {
    fs::read_to_string(fixtures().join(file))
        .unwrap()
        .parse()
        .unwrap()
}

fn trusted() -> TrustedKey {
    key("test-cache-1.public")
}

/// Every narinfo of one cache: (object name, body).
fn narinfos(cache: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fixtures().join(format!("cache-{cache}"));
    let mut out: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "narinfo"))
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            (name, fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert_eq!(out.len(), 3, "{}", dir.display());
    out
}

/// The narinfo of the top path `a.txt` (the one with two references) in one cache.
fn top(cache: &str) -> (String, Vec<u8>, NarInfo) {
    let path = fs::read_to_string(fixtures().join("top-store-path")).unwrap();
    let hash_part = path.trim().rsplit('/').next().unwrap()[..32].to_string();
    let name = format!("{hash_part}.narinfo");
    let text = fs::read(fixtures().join(format!("cache-{cache}/{name}"))).unwrap();
    let info = NarInfo::parse(&text).unwrap();
    (name, text, info)
}

fn nar_body(cache: &str, info: &NarInfo) -> Vec<u8> {
    fs::read(fixtures().join(format!("cache-{cache}/{}", info.url))).unwrap()
}

fn verify_in_chunks(key: &str, body: &[u8], chunk: usize) -> Result<NarMatch, NixCheckError> {
    let ObjectKind::Nar { hash, compression } = classify_key(key).unwrap() else {
        panic!("{key} is not a NAR key");
    };
    let mut v = NarVerifier::new(hash, compression);
    for piece in body.chunks(chunk) {
        v.update(piece)?;
    }
    v.finish()
}

/// `key` with the 52-character hash after `nar/` replaced by `hash`.
fn renamed(url: &str, hash: &[u8; 32]) -> String {
    format!("nar/{}{}", base32::encode(hash), &url[4 + 52..])
}

#[test]
fn every_real_narinfo_is_accepted() {
    for cache in CACHES {
        for (name, text) in narinfos(cache) {
            assert_eq!(
                classify_key(&name).unwrap(),
                ObjectKind::NarInfo {
                    hash_part: name[..32].to_string()
                }
            );
            let v = verify_narinfo(&name, &text, &[key("other-cache-1.public"), trusted()])
                .unwrap_or_else(|e| panic!("{cache}/{name}: {e}"));
            assert_eq!(v.key_name(), "test-cache-1");
        }
    }
}

#[test]
fn fingerprint_lists_both_references_as_full_sorted_paths() {
    let (_, _, info) = top("xz");
    assert_eq!(info.references.len(), 2);
    let fp = info.fingerprint();
    let mut refs: Vec<String> = info
        .references
        .iter()
        .map(|r| format!("/nix/store/{r}"))
        .collect();
    refs.sort();
    assert_eq!(
        fp,
        format!(
            "1;{};{};{};{}",
            info.store_path,
            format_sha256(&info.nar_hash),
            info.nar_size,
            refs.join(",")
        )
    );
}

#[test]
fn narhash_in_another_spelling_still_verifies() {
    use base64::Engine as _;
    let (name, text, info) = top("zstd");
    let text = String::from_utf8(text).unwrap();
    let sri = format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(info.nar_hash)
    );
    let text = text.replace(&format_sha256(&info.nar_hash), &sri);
    assert!(text.contains("NarHash: sha256-"));
    verify_narinfo(&name, text.as_bytes(), &[trusted()]).unwrap();
}

#[test]
fn signature_by_untrusted_key_is_refused() {
    let (name, text, _) = top("xz");
    let e = verify_narinfo(&name, &text, &[key("other-cache-1.public")]).unwrap_err();
    assert_eq!(
        e,
        NixCheckError::NoTrustedSignature {
            signed_by: vec!["test-cache-1".into()],
            trusted: vec!["other-cache-1".into()],
        }
    );
    // Same key name, other key: the name alone earns nothing.
    let e = verify_narinfo(&name, &text, &[key("test-cache-1-impostor.public")]).unwrap_err();
    assert!(
        matches!(&e, NixCheckError::BadSignature { key_name, .. } if key_name == "test-cache-1"),
        "{e}"
    );
}

#[test]
fn tampered_signed_fields_are_refused() {
    let (name, text, info) = top("xz");
    let text = String::from_utf8(text).unwrap();
    let b_txt = narinfos("xz")
        .into_iter()
        .map(|(_, t)| NarInfo::parse(&t).unwrap())
        .find(|n| n.store_path.ends_with("-b.txt"))
        .unwrap();
    let tampered = [
        text.replace(
            &format_sha256(&info.nar_hash),
            &format_sha256(&b_txt.nar_hash),
        ),
        text.replace(
            &format!("NarSize: {}", info.nar_size),
            &format!("NarSize: {}", info.nar_size + 1),
        ),
        text.replace(&format!(" {}", info.references[1]), ""),
    ];
    for t in tampered {
        assert_ne!(t, text);
        let e = verify_narinfo(&name, t.as_bytes(), &[trusted()]).unwrap_err();
        assert!(
            matches!(&e, NixCheckError::BadSignature { key_name, .. } if key_name == "test-cache-1"),
            "{e}"
        );
        assert!(e.to_string().contains("does not verify"), "{e}");
    }
    // Unsigned fields may change (a store may re-compress NARs), as in Nix.
    let moved = text.replace("URL: nar/", "URL: elsewhere/nar/");
    verify_narinfo(&name, moved.as_bytes(), &[trusted()]).unwrap();
}

#[test]
fn narinfo_without_sig_is_refused() {
    let (name, text, _) = top("zstd");
    let unsigned: String = String::from_utf8(text)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("Sig: "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        verify_narinfo(&name, unsigned.as_bytes(), &[trusted()]),
        Err(NixCheckError::NoSignature)
    );
}

#[test]
fn narinfo_under_another_name_is_refused() {
    let (_, text, info) = top("xz");
    let (other_name, _) = narinfos("xz")
        .into_iter()
        .find(|(n, _)| !info.store_path.contains(&n[..32]))
        .unwrap();
    let e = verify_narinfo(&other_name, &text, &[trusted()]).unwrap_err();
    assert_eq!(
        e,
        NixCheckError::NarInfoNameMismatch {
            object_name: other_name,
            store_path: info.store_path.clone(),
            expected_name: format!("{}.narinfo", info.hash_part()),
        }
    );
}

#[test]
fn crlf_narinfo_is_refused_as_nix_would() {
    let (name, text, _) = top("xz");
    let crlf = String::from_utf8(text).unwrap().replace('\n', "\r\n");
    assert_eq!(
        verify_narinfo(&name, crlf.as_bytes(), &[trusted()]),
        Err(NixCheckError::MalformedNarInfo(
            NarInfoError::CarriageReturn { line: 1 }
        ))
    );
}

#[test]
fn every_real_nar_verifies_by_file_hash_in_any_chunking() {
    for cache in CACHES {
        for (name, text) in narinfos(cache) {
            let info = NarInfo::parse(&text).unwrap();
            let ObjectKind::Nar { hash, compression } = classify_key(&info.url).unwrap() else {
                panic!("{}", info.url);
            };
            assert_eq!(Some(hash), info.file_hash, "{cache}/{name}");
            assert_eq!(compression.nix_name(), info.compression);
            let body = nar_body(cache, &info);
            for chunk in [body.len().max(1), 1, 7, 64 << 10] {
                assert_eq!(
                    verify_in_chunks(&info.url, &body, chunk),
                    Ok(NarMatch::FileHash),
                    "{cache}/{name} in chunks of {chunk}"
                );
            }
        }
    }
}

#[test]
fn nar_named_by_its_nar_hash_is_accepted() {
    for cache in ["xz", "zstd", "bzip2"] {
        let (_, _, info) = top(cache);
        let body = nar_body(cache, &info);
        let key = renamed(&info.url, &info.nar_hash);
        assert_ne!(key, info.url);
        for chunk in [body.len(), 1, 7, 64 << 10] {
            assert_eq!(
                verify_in_chunks(&key, &body, chunk),
                Ok(NarMatch::NarHash),
                "{cache} in chunks of {chunk}"
            );
        }
    }
    // Uncompressed, both names are the same and the body matches as stored.
    let (_, _, info) = top("none");
    assert_eq!(info.file_hash, Some(info.nar_hash));
    assert_eq!(
        verify_in_chunks(&info.url, &nar_body("none", &info), 7),
        Ok(NarMatch::FileHash)
    );
}

#[test]
fn nar_under_another_nars_name_is_refused_naming_every_hash() {
    let (_, _, a) = top("xz");
    let b = narinfos("xz")
        .into_iter()
        .map(|(_, t)| NarInfo::parse(&t).unwrap())
        .find(|n| n.store_path.ends_with("-b.txt"))
        .unwrap();
    let body = nar_body("xz", &a);
    let e = verify_in_chunks(&b.url, &body, 7).unwrap_err();
    let NixCheckError::NarMismatch {
        expected,
        file_hash,
        decompressed,
    } = &e
    else {
        panic!("{e}");
    };
    assert_eq!(Some(*expected), b.file_hash);
    assert_eq!(Some(*file_hash), a.file_hash);
    assert!(matches!(decompressed, Decompressed::Hashed { hash, .. } if *hash == a.nar_hash));
    let text = e.to_string();
    for h in [*expected, *file_hash, a.nar_hash] {
        assert!(text.contains(&format_sha256(&h)), "{text}");
    }
}

#[test]
fn truncated_nar_named_by_nar_hash_is_refused() {
    for cache in ["xz", "zstd", "bzip2"] {
        let (_, _, info) = top(cache);
        let body = nar_body(cache, &info);
        let key = renamed(&info.url, &info.nar_hash);
        for cut in [body.len() - 1, body.len() / 2, 10] {
            let e = verify_in_chunks(&key, &body[..cut], 7).unwrap_err();
            assert!(
                matches!(
                    &e,
                    NixCheckError::NarMismatch {
                        decompressed: Decompressed::Failed { .. },
                        ..
                    }
                ),
                "{cache} cut at {cut}: {e}"
            );
        }
    }
}

#[test]
fn decompression_limit_leaves_only_the_file_hash() {
    let (_, _, info) = top("xz");
    let body = nar_body("xz", &info);
    let by_nar_hash = renamed(&info.url, &info.nar_hash);
    let run = |key: &str, limit: u64| {
        let ObjectKind::Nar { hash, compression } = classify_key(key).unwrap() else {
            panic!("{key}");
        };
        let mut v = NarVerifier::new(hash, compression).with_max_decompressed_size(limit);
        v.update(&body).unwrap();
        v.finish()
    };
    assert_eq!(run(&by_nar_hash, info.nar_size), Ok(NarMatch::NarHash));
    let e = run(&by_nar_hash, info.nar_size - 1).unwrap_err();
    assert!(e.to_string().contains("stopped at the limit"), "{e}");
    assert_eq!(run(&info.url, 1), Ok(NarMatch::FileHash));
}

#[test]
fn nix_cache_info_is_plain() {
    assert!(fixtures().join("cache-xz/nix-cache-info").exists());
    assert_eq!(classify_key("nix-cache-info").unwrap(), ObjectKind::Plain);
}
