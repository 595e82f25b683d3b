//! Key files and the public key's text form.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use cairn_proto::identity::{KeyFileError, PublicKey, SecretKey};

/// A fresh directory under cargo's per-target temp dir, unique per test.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("proto-identity-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn key_file_is_created_private_and_reloads() {
    let dir = scratch("create");
    let path = dir.join("node.key");

    let (key, created) = SecretKey::load_or_create(&path).unwrap();
    assert!(created);
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("cairn-ed25519-secret-v1 "));
    assert!(text.ends_with('\n'));
    assert_eq!(text.len(), "cairn-ed25519-secret-v1 ".len() + 64 + 1);

    let (again, created) = SecretKey::load_or_create(&path).unwrap();
    assert!(!created);
    assert_eq!(again.seed(), key.seed());
    assert_eq!(SecretKey::load(&path).unwrap().public(), key.public());

    // No temporary files are left behind.
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("node.key")]);
}

#[test]
fn open_key_file_is_refused() {
    let dir = scratch("open");
    let path = dir.join("node.key");
    SecretKey::load_or_create(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();

    match SecretKey::load(&path) {
        Err(KeyFileError::TooOpen { mode, .. }) => assert_eq!(mode, 0o644),
        other => panic!("expected TooOpen, got {other:?}"),
    }
    assert!(matches!(
        SecretKey::load_or_create(&path),
        Err(KeyFileError::TooOpen { .. })
    ));

    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    assert!(matches!(
        SecretKey::load(&path),
        Err(KeyFileError::TooOpen { .. })
    ));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
    assert!(SecretKey::load(&path).is_ok());
}

#[test]
fn garbage_key_file_is_malformed() {
    let dir = scratch("garbage");
    let cases: [&[u8]; 6] = [
        b"hello\n",
        b"",
        b"cairn-ed25519-secret-v1 abcd\n",
        b"cairn-ed25519-secret-v2 0000000000000000000000000000000000000000000000000000000000000000\n",
        b"cairn-ed25519-secret-v1 zz00000000000000000000000000000000000000000000000000000000000000\n",
        b"\xff\xfe\xfd",
    ];
    for (i, contents) in cases.iter().enumerate() {
        let path = dir.join(format!("bad{i}.key"));
        fs::write(&path, contents).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            matches!(SecretKey::load(&path), Err(KeyFileError::Malformed { .. })),
            "case {i} was not refused as malformed"
        );
        // load_or_create must not "repair" a bad file by replacing it.
        assert!(SecretKey::load_or_create(&path).is_err());
        assert_eq!(fs::read(&path).unwrap(), *contents);
    }
    let huge = dir.join("huge.key");
    fs::write(&huge, vec![b'a'; 10_000]).unwrap();
    fs::set_permissions(&huge, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(
        SecretKey::load(&huge),
        Err(KeyFileError::Malformed { .. })
    ));
}

#[test]
fn missing_key_file_and_missing_dir() {
    let dir = scratch("missing");
    assert!(matches!(
        SecretKey::load(&dir.join("absent.key")),
        Err(KeyFileError::Io { .. })
    ));
    assert!(matches!(
        SecretKey::load_or_create(&dir.join("no-such-dir").join("node.key")),
        Err(KeyFileError::Io { .. })
    ));
}

#[test]
fn key_file_accepts_hand_written_seed() {
    let dir = scratch("hand");
    let path = dir.join("node.key");
    let seed_hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
    fs::write(&path, format!("cairn-ed25519-secret-v1 {seed_hex}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let key = SecretKey::load(&path).unwrap();
    let mut expected = [0u8; 32];
    for (i, b) in expected.iter_mut().enumerate() {
        *b = u8::from_str_radix(&seed_hex[2 * i..2 * i + 2], 16).unwrap();
    }
    assert_eq!(key.seed(), expected);
}

#[test]
fn public_key_text_round_trip() {
    for seed in [[0u8; 32], [1; 32], [0xff; 32], [0x42; 32]] {
        let key = SecretKey::from_seed(seed).public();
        let text = key.to_string();
        assert_eq!(text.len(), 52);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        );
        assert_eq!(text.parse::<PublicKey>(), Ok(key));
        assert_eq!(format!("{key:?}"), format!("PublicKey({text})"));
    }
    // Raw bytes at the extremes exercise every bit position.
    for bytes in [[0u8; 32], [0xff; 32]] {
        let key = PublicKey::from_bytes(bytes);
        assert_eq!(key.to_string().parse::<PublicKey>(), Ok(key));
    }
    assert_eq!(PublicKey::from_bytes([0; 32]).to_string(), "a".repeat(52));
}

#[test]
fn bad_public_key_text_is_refused() {
    let good = SecretKey::from_seed([5; 32]).public().to_string();
    assert!(good[..51].parse::<PublicKey>().is_err());
    assert!(format!("{good}a").parse::<PublicKey>().is_err());
    assert!(good.to_uppercase().parse::<PublicKey>().is_err());
    assert!(format!("{}1", &good[..51]).parse::<PublicKey>().is_err());
    assert!(format!("{}=", &good[..51]).parse::<PublicKey>().is_err());
    assert!("".parse::<PublicKey>().is_err());
    assert!("é".repeat(26).parse::<PublicKey>().is_err());
    // The last digit has 4 spare bits; a non-zero spare makes a second spelling of the
    // same key, which must be refused.
    let all_zero = "a".repeat(52);
    assert!(all_zero.parse::<PublicKey>().is_ok());
    let non_canonical = format!("{}b", &all_zero[..51]);
    assert!(non_canonical.parse::<PublicKey>().is_err());
    let canonical_one_bit = format!("{}q", &all_zero[..51]);
    let parsed = canonical_one_bit.parse::<PublicKey>().unwrap();
    assert_eq!(parsed.as_bytes()[31], 1);
}
