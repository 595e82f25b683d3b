//! The `.narinfo` format: what a binary cache says about one store path.
//!
//! Parsing follows Nix's own reader (`nar-info.cc`): `Key: value` lines, unknown keys ignored,
//! `Compression` defaulting to `bzip2`, `StorePath`, `URL`, `NarHash` and a non-zero `NarSize`
//! required. Where Nix would silently misread a file (a line without `": "`, a blank line, a
//! CR before the newline, a missing final newline, a repeated field) this parser refuses it
//! instead, so the gateway never accepts a narinfo that it and a Nix client read differently.

use std::collections::BTreeSet;
use std::fmt;

use super::base32::{self, HashError};

/// Nix's limit on the name part of a store path.
const MAX_NAME_LEN: usize = 211;
/// Characters in the hash part of a store path basename.
pub(crate) const HASH_PART_LEN: usize = 32;

/// Why a narinfo was refused. Line numbers count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NarInfoError {
    /// The bytes are not UTF-8 (Nix writes only ASCII here).
    #[error("not UTF-8 (line {line})")]
    NotUtf8 {
        /// Line of the first invalid byte.
        line: usize,
    },
    /// The text does not end with `\n`; Nix refuses it ("expecting '\n'").
    #[error("the last line does not end with a newline")]
    MissingFinalNewline,
    /// CRLF line ending. Nix keeps the CR in the value and then rejects the store path or
    /// hash, so such a narinfo is unusable for clients.
    #[error("line {line} ends with CR (CRLF line endings are not accepted by Nix)")]
    CarriageReturn {
        /// The offending line.
        line: usize,
    },
    /// An empty line (Nix would glue it to the next line and lose that field).
    #[error("line {line} is empty")]
    BlankLine {
        /// The offending line.
        line: usize,
    },
    /// A line that is not `Key: value`.
    #[error("line {line} is not `Key: value` (no \": \" after the field name): {text:?}")]
    NotKeyValue {
        /// The offending line.
        line: usize,
        /// Its text.
        text: String,
    },
    /// A single-valued field given twice.
    #[error("line {line}: field {field} appears twice")]
    DuplicateField {
        /// The second occurrence.
        line: usize,
        /// The field name.
        field: &'static str,
    },
    /// A store path (in `StorePath`) or store path basename (in `References`, `Deriver`)
    /// that Nix would not accept.
    #[error("line {line}: {field} has invalid store path {value:?}: {reason}")]
    BadStorePath {
        /// The offending line.
        line: usize,
        /// The field name.
        field: &'static str,
        /// The path or basename.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `NarHash` or `FileHash` that is not a sha256 Nix would parse.
    #[error("line {line}: invalid {field}: {source}")]
    BadHash {
        /// The offending line.
        line: usize,
        /// The field name.
        field: &'static str,
        /// Why the hash was refused.
        source: HashError,
    },
    /// A size that is not a decimal unsigned 64-bit number.
    #[error("line {line}: {field} is not a number: {value:?}")]
    BadNumber {
        /// The offending line.
        line: usize,
        /// The field name.
        field: &'static str,
        /// The text found.
        value: String,
    },
    /// A `Sig` value without `name:` before the signature.
    #[error("line {line}: Sig is not `<key name>:<base64 signature>`: {value:?}")]
    BadSig {
        /// The offending line.
        line: usize,
        /// The text found.
        value: String,
    },
    /// A required field is absent (or `NarSize` is 0, which Nix treats as absent).
    #[error("required field {field} is missing")]
    MissingField {
        /// The field name.
        field: &'static str,
    },
    /// `NarSize: 0`: Nix refuses it since the fingerprint cannot be computed.
    #[error("line {line}: NarSize is 0")]
    ZeroNarSize {
        /// The offending line.
        line: usize,
    },
}

/// A parsed narinfo. Hashes are decoded; everything else is kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfo {
    /// Full store path, e.g. `/nix/store/<hash>-<name>`.
    pub store_path: String,
    /// Where the NAR lives, relative to the cache root (e.g. `nar/<hash>.nar.xz`).
    pub url: String,
    /// Compression of the NAR file as Nix names it (`xz`, `zstd`, `none`, ...); `bzip2` when
    /// the field is absent, as in Nix.
    pub compression: String,
    /// sha256 of the (compressed) NAR file, if given.
    pub file_hash: Option<[u8; 32]>,
    /// Size of the (compressed) NAR file, if given.
    pub file_size: Option<u64>,
    /// sha256 of the uncompressed NAR; signed.
    pub nar_hash: [u8; 32],
    /// Size of the uncompressed NAR; signed.
    pub nar_size: u64,
    /// Basenames (`<hash>-<name>`) of the referenced store paths, as written; signed.
    pub references: Vec<String>,
    /// Basename of the deriver, if known.
    pub deriver: Option<String>,
    /// `Sig` values as written (`<key name>:<base64>`), in file order.
    pub sigs: Vec<String>,
    /// Content address (`CA`), unvalidated: signatures do not cover it.
    pub ca: Option<String>,
}

impl NarInfo {
    /// Parses a narinfo file.
    pub fn parse(text: &[u8]) -> Result<NarInfo, NarInfoError> {
        let text = std::str::from_utf8(text).map_err(|e| NarInfoError::NotUtf8 {
            line: line_of(text, e.valid_up_to()),
        })?;
        let body = text
            .strip_suffix('\n')
            .ok_or(NarInfoError::MissingFinalNewline)?;
        let mut fields = Fields::default();
        for (index, raw) in body.split('\n').enumerate() {
            fields.take_line(index + 1, raw)?;
        }
        fields.finish()
    }

    /// The store directory (everything before the last `/` of `StorePath`), e.g. `/nix/store`.
    pub fn store_dir(&self) -> &str {
        split_store_path(&self.store_path).map_or("", |(dir, _)| dir)
    }

    /// The 32-character hash part of the store path; a narinfo must be stored as
    /// `<hash part>.narinfo`.
    pub fn hash_part(&self) -> &str {
        split_store_path(&self.store_path)
            .and_then(|(_, base)| base.get(..HASH_PART_LEN))
            .unwrap_or("")
    }

    /// The string cache keys sign:
    /// `1;<StorePath>;sha256:<nix32 NarHash>;<NarSize>;<references as full paths, comma-separated>`.
    ///
    /// Like Nix, it re-encodes `NarHash` as nix32 whatever form the file used, and takes the
    /// references as a sorted set (duplicates once, sorted bytewise), since that is what Nix
    /// signed.
    pub fn fingerprint(&self) -> String {
        let dir = self.store_dir();
        let refs: BTreeSet<&str> = self.references.iter().map(String::as_str).collect();
        let refs: Vec<String> = refs.into_iter().map(|r| format!("{dir}/{r}")).collect();
        format!(
            "1;{};{};{};{}",
            self.store_path,
            base32::format_sha256(&self.nar_hash),
            self.nar_size,
            refs.join(",")
        )
    }
}

/// Fields seen so far; `Option`s double as "already given" markers for duplicate detection.
#[derive(Default)]
struct Fields {
    store_path: Option<String>,
    url: Option<String>,
    compression: Option<String>,
    file_hash: Option<[u8; 32]>,
    file_size: Option<u64>,
    nar_hash: Option<[u8; 32]>,
    nar_size: Option<u64>,
    references: Option<Vec<String>>,
    deriver: Option<Option<String>>,
    sigs: Vec<String>,
    ca: Option<String>,
}

impl Fields {
    fn take_line(&mut self, line: usize, raw: &str) -> Result<(), NarInfoError> {
        if raw.ends_with('\r') {
            return Err(NarInfoError::CarriageReturn { line });
        }
        if raw.is_empty() {
            return Err(NarInfoError::BlankLine { line });
        }
        let (key, value) = raw
            .split_once(':')
            .and_then(|(k, v)| Some((k, v.strip_prefix(' ')?)))
            .ok_or_else(|| NarInfoError::NotKeyValue {
                line,
                text: raw.to_string(),
            })?;
        match key {
            "StorePath" => {
                check_store_path(value).map_err(|reason| NarInfoError::BadStorePath {
                    line,
                    field: "StorePath",
                    value: value.to_string(),
                    reason,
                })?;
                set(&mut self.store_path, value.to_string(), line, "StorePath")
            }
            "URL" => set(&mut self.url, value.to_string(), line, "URL"),
            "Compression" => set(
                &mut self.compression,
                value.to_string(),
                line,
                "Compression",
            ),
            "FileHash" => {
                let hash = hash_field(value, line, "FileHash")?;
                set(&mut self.file_hash, hash, line, "FileHash")
            }
            "FileSize" => {
                let n = number_field(value, line, "FileSize")?;
                set(&mut self.file_size, n, line, "FileSize")
            }
            "NarHash" => {
                let hash = hash_field(value, line, "NarHash")?;
                set(&mut self.nar_hash, hash, line, "NarHash")
            }
            "NarSize" => {
                let n = number_field(value, line, "NarSize")?;
                if n == 0 {
                    return Err(NarInfoError::ZeroNarSize { line });
                }
                set(&mut self.nar_size, n, line, "NarSize")
            }
            "References" => {
                // Nix splits on single spaces and drops empty pieces; same here.
                let refs = value
                    .split(' ')
                    .filter(|r| !r.is_empty())
                    .map(|r| basename_field(r, line, "References"))
                    .collect::<Result<Vec<_>, _>>()?;
                set(&mut self.references, refs, line, "References")
            }
            "Deriver" => {
                let deriver = if value == "unknown-deriver" {
                    None
                } else {
                    Some(basename_field(value, line, "Deriver")?)
                };
                set(&mut self.deriver, deriver, line, "Deriver")
            }
            "Sig" => {
                match value.split_once(':') {
                    Some((name, sig)) if !name.is_empty() && !sig.is_empty() => {}
                    _ => {
                        return Err(NarInfoError::BadSig {
                            line,
                            value: value.to_string(),
                        });
                    }
                }
                self.sigs.push(value.to_string());
                Ok(())
            }
            "CA" => set(&mut self.ca, value.to_string(), line, "CA"),
            // Nix ignores fields it does not know (newer writers add some, e.g. `Provenance`).
            _ => Ok(()),
        }
    }

    fn finish(self) -> Result<NarInfo, NarInfoError> {
        let missing = |field| NarInfoError::MissingField { field };
        Ok(NarInfo {
            store_path: self.store_path.ok_or(missing("StorePath"))?,
            url: self.url.filter(|u| !u.is_empty()).ok_or(missing("URL"))?,
            compression: self
                .compression
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "bzip2".to_string()),
            file_hash: self.file_hash,
            file_size: self.file_size,
            nar_hash: self.nar_hash.ok_or(missing("NarHash"))?,
            nar_size: self.nar_size.ok_or(missing("NarSize"))?,
            references: self.references.unwrap_or_default(),
            deriver: self.deriver.flatten(),
            sigs: self.sigs,
            ca: self.ca,
        })
    }
}

fn set<T>(
    slot: &mut Option<T>,
    value: T,
    line: usize,
    field: &'static str,
) -> Result<(), NarInfoError> {
    if slot.is_some() {
        return Err(NarInfoError::DuplicateField { line, field });
    }
    *slot = Some(value);
    Ok(())
}

fn hash_field(value: &str, line: usize, field: &'static str) -> Result<[u8; 32], NarInfoError> {
    base32::parse_sha256(value).map_err(|source| NarInfoError::BadHash {
        line,
        field,
        source,
    })
}

fn number_field(value: &str, line: usize, field: &'static str) -> Result<u64, NarInfoError> {
    let bad = || NarInfoError::BadNumber {
        line,
        field,
        value: value.to_string(),
    };
    // `u64::from_str` would also take a leading `+`, which Nix does not.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    value.parse().map_err(|_| bad())
}

fn basename_field(value: &str, line: usize, field: &'static str) -> Result<String, NarInfoError> {
    check_basename(value).map_err(|reason| NarInfoError::BadStorePath {
        line,
        field,
        value: value.to_string(),
        reason,
    })?;
    Ok(value.to_string())
}

/// Splits `/dir/.../basename` into the store dir and the basename.
fn split_store_path(path: &str) -> Option<(&str, &str)> {
    path.rsplit_once('/')
}

fn check_store_path(path: &str) -> Result<(), String> {
    let (dir, base) = split_store_path(path).ok_or("it has no `/`")?;
    if !dir.starts_with('/') {
        return Err("the store directory is not absolute".into());
    }
    check_basename(base)
}

/// Nix's rules for `<32 nix32 chars>-<name>`.
pub(crate) fn check_basename(base: &str) -> Result<(), String> {
    let (hash, name) = match (base.get(..HASH_PART_LEN), base.get(HASH_PART_LEN..)) {
        (Some(hash), Some(rest)) => match rest.strip_prefix('-') {
            Some(name) => (hash, name),
            None => return Err("expected `-` after the 32-character hash part".into()),
        },
        _ => return Err("too short for `<32-character hash>-<name>`".into()),
    };
    check_hash_part(hash)?;
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("the name is longer than {MAX_NAME_LEN} characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || "+-._?=".contains(c)))
    {
        return Err(format!("the name contains the character {c:?}"));
    }
    // `.` and `..` (alone or as the first dash-separated component) could escape the store.
    let first = name.split('-').next().unwrap_or(name);
    if first == "." || first == ".." {
        return Err(format!("the name may not start with `{first}`"));
    }
    Ok(())
}

/// The 32-character hash part of a store path: nix32 digits only.
pub(crate) fn check_hash_part(hash: &str) -> Result<(), String> {
    if hash.len() != HASH_PART_LEN {
        return Err(format!(
            "the hash part has {} characters, not {HASH_PART_LEN}",
            hash.len()
        ));
    }
    base32::decode(hash).map(|_| ()).map_err(|e| e.to_string())
}

fn line_of(text: &[u8], offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |t| t.iter().filter(|&&b| b == b'\n').count())
        + 1
}

impl fmt::Display for NarInfo {
    /// Writes the narinfo back in Nix's field order (useful in logs and tests).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "StorePath: {}", self.store_path)?;
        writeln!(f, "URL: {}", self.url)?;
        writeln!(f, "Compression: {}", self.compression)?;
        if let Some(h) = &self.file_hash {
            writeln!(f, "FileHash: {}", base32::format_sha256(h))?;
        }
        if let Some(n) = self.file_size {
            writeln!(f, "FileSize: {n}")?;
        }
        writeln!(f, "NarHash: {}", base32::format_sha256(&self.nar_hash))?;
        writeln!(f, "NarSize: {}", self.nar_size)?;
        writeln!(f, "References: {}", self.references.join(" "))?;
        if let Some(d) = &self.deriver {
            writeln!(f, "Deriver: {d}")?;
        }
        for sig in &self.sigs {
            writeln!(f, "Sig: {sig}")?;
        }
        if let Some(ca) = &self.ca {
            writeln!(f, "CA: {ca}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real narinfo written by Nix 2.8 (see reference/nix-cache.md §2).
    const SAMPLE: &str = "StorePath: /nix/store/06sgdhf0cy9l42fm8kkja1r089xb4icn-a.txt
URL: nar/1givpmp5xk3xfiybxxjx3a6m9hp4alqh5j5nap50bi00abiqnj54.nar.zst
Compression: zstd
FileHash: sha256:1givpmp5xk3xfiybxxjx3a6m9hp4alqh5j5nap50bi00abiqnj54
FileSize: 133
NarHash: sha256:01mjdvbjh93fwd9gigbpfgalkj9dm9rk8p2f949n8xfd94xlqy97
NarSize: 168
References: 3hnizkglw91wg5qdfp9hklqx5kll6qph-b.txt
Sig: test-cache-1:/9sSHZAl/kJ+zg/MEFr7FuU9N7iCq86sgfnENN2U+EbHiUFZCzivAxhnUfjqSDryFOPasTibvZtsu/yGauImBA==
CA: text:sha256:1iwsfd2hnvznkaqxfm8l70hgnarwzgyl67fc82n799illxdknjby
";

    fn parse(s: &str) -> Result<NarInfo, NarInfoError> {
        NarInfo::parse(s.as_bytes())
    }

    /// SAMPLE with the `field` line replaced by `new_line`, or with `new_line` appended if
    /// SAMPLE has no such field.
    fn replace_line(field: &str, new_line: &str) -> String {
        let prefix = format!("{field}:");
        let mut out = String::new();
        let mut replaced = false;
        for l in SAMPLE.lines() {
            if l.starts_with(&prefix) {
                out.push_str(new_line);
                replaced = true;
            } else {
                out.push_str(l);
            }
            out.push('\n');
        }
        if !replaced {
            out.push_str(new_line);
            out.push('\n');
        }
        out
    }

    #[test]
    fn parses_a_real_narinfo_and_builds_nix_fingerprint() {
        let n = parse(SAMPLE).unwrap();
        assert_eq!(n.store_dir(), "/nix/store");
        assert_eq!(n.hash_part(), "06sgdhf0cy9l42fm8kkja1r089xb4icn");
        assert_eq!(n.compression, "zstd");
        assert_eq!(n.file_size, Some(133));
        assert_eq!(n.nar_size, 168);
        assert_eq!(n.sigs.len(), 1);
        assert_eq!(n.deriver, None);
        // The exact string the reference doc verified against the real signature.
        assert_eq!(
            n.fingerprint(),
            "1;/nix/store/06sgdhf0cy9l42fm8kkja1r089xb4icn-a.txt;\
             sha256:01mjdvbjh93fwd9gigbpfgalkj9dm9rk8p2f949n8xfd94xlqy97;168;\
             /nix/store/3hnizkglw91wg5qdfp9hklqx5kll6qph-b.txt"
        );
        // Writing it back gives the same text.
        assert_eq!(n.to_string(), SAMPLE);
    }

    #[test]
    fn fingerprint_normalises_hash_form_and_reference_order() {
        use base64::Engine as _;
        let original = parse(SAMPLE).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(original.nar_hash);
        let hex: String = original
            .nar_hash
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        for form in [
            format!("sha256-{b64}"),
            format!("sha256:{b64}"),
            format!("sha256:{hex}"),
        ] {
            let n = parse(&replace_line("NarHash", &format!("NarHash: {form}"))).unwrap();
            assert_eq!(n.fingerprint(), original.fingerprint(), "{form}");
        }

        let mut n = parse(SAMPLE).unwrap();
        n.references = vec![
            "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-z".into(),
            "00000000000000000000000000000000-a".into(),
            "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-z".into(),
        ];
        assert!(n.fingerprint().ends_with(
            ";/nix/store/00000000000000000000000000000000-a,\
             /nix/store/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-z"
        ));
        n.references.clear();
        assert!(n.fingerprint().ends_with(";168;"));
    }

    #[test]
    fn empty_references_unknown_fields_and_defaults() {
        let text = "StorePath: /nix/store/3hnizkglw91wg5qdfp9hklqx5kll6qph-b.txt
URL: nar/x.nar.bz2
NarHash: sha256:01mjdvbjh93fwd9gigbpfgalkj9dm9rk8p2f949n8xfd94xlqy97
NarSize: 120
References: 
Deriver: unknown-deriver
Provenance: {\"whatever\": 1}
";
        let n = parse(text).unwrap();
        assert!(n.references.is_empty());
        assert_eq!(n.compression, "bzip2");
        assert_eq!(n.deriver, None);
        assert_eq!(n.file_hash, None);
        assert!(n.sigs.is_empty());
    }

    #[test]
    fn refuses_framing_problems() {
        assert_eq!(
            parse(&SAMPLE.replace('\n', "\r\n")),
            Err(NarInfoError::CarriageReturn { line: 1 })
        );
        assert_eq!(
            parse(SAMPLE.trim_end()),
            Err(NarInfoError::MissingFinalNewline)
        );
        assert_eq!(
            parse(&SAMPLE.replacen("\nURL", "\n\nURL", 1)),
            Err(NarInfoError::BlankLine { line: 2 })
        );
        assert!(matches!(
            parse(&SAMPLE.replacen("NarSize: 168", "NarSize:168", 1)),
            Err(NarInfoError::NotKeyValue { line: 7, .. })
        ));
        assert!(matches!(
            parse(&SAMPLE.replacen("NarSize: 168", "NarSize 168", 1)),
            Err(NarInfoError::NotKeyValue { line: 7, .. })
        ));
        let mut bytes = SAMPLE.as_bytes().to_vec();
        bytes[SAMPLE.find("URL").unwrap()] = 0xff;
        assert_eq!(
            NarInfo::parse(&bytes),
            Err(NarInfoError::NotUtf8 { line: 2 })
        );
        assert_eq!(parse(""), Err(NarInfoError::MissingFinalNewline));
        assert_eq!(parse("\n"), Err(NarInfoError::BlankLine { line: 1 }));
    }

    #[test]
    fn refuses_missing_and_duplicate_fields() {
        for field in ["StorePath", "URL", "NarHash", "NarSize"] {
            let text: String = SAMPLE
                .lines()
                .filter(|l| !l.starts_with(&format!("{field}:")))
                .map(|l| format!("{l}\n"))
                .collect();
            assert_eq!(
                parse(&text),
                Err(NarInfoError::MissingField { field }),
                "{field}"
            );
        }
        let twice = format!(
            "{SAMPLE}NarHash: sha256:1givpmp5xk3xfiybxxjx3a6m9hp4alqh5j5nap50bi00abiqnj54\n"
        );
        assert_eq!(
            parse(&twice),
            Err(NarInfoError::DuplicateField {
                line: 11,
                field: "NarHash"
            })
        );
        assert_eq!(
            parse(&replace_line("NarSize", "NarSize: 0")),
            Err(NarInfoError::ZeroNarSize { line: 7 })
        );
        // Several Sig lines are normal.
        let two_sigs = format!("{SAMPLE}Sig: other-1:AAAA\n");
        assert_eq!(parse(&two_sigs).unwrap().sigs.len(), 2);
    }

    #[test]
    fn refuses_bad_values() {
        let cases = [
            (
                "StorePath",
                "StorePath: nix/store/06sgdhf0cy9l42fm8kkja1r089xb4icn-a.txt",
            ),
            (
                "StorePath",
                "StorePath: /nix/store/06sgdhf0cy9l42fm8kkja1r089xb4ice-a.txt",
            ),
            (
                "StorePath",
                "StorePath: /nix/store/06sgdhf0cy9l42fm8kkja1r089xb4icn",
            ),
            (
                "StorePath",
                "StorePath: /nix/store/06sgdhf0cy9l42fm8kkja1r089xb4icn_a.txt",
            ),
            (
                "StorePath",
                "StorePath: /nix/store/06sgdhf0cy9l42fm8kkja1r089xb4icn-a b",
            ),
            (
                "StorePath",
                "StorePath: /nix/store/06sgdhf0cy9l42fm8kkja1r089xb4icn-..-x",
            ),
            (
                "StorePath",
                "StorePath: 06sgdhf0cy9l42fm8kkja1r089xb4icn-a.txt",
            ),
            (
                "References",
                "References: 3hnizkglw91wg5qdfp9hklqx5kll6qph-b.txt /nix/store/x",
            ),
            ("Deriver", "Deriver: short.drv"),
        ];
        for (field, line) in cases {
            let r = parse(&replace_line(field, line));
            assert!(
                matches!(&r, Err(NarInfoError::BadStorePath { field: f, .. }) if *f == field),
                "{line}: {r:?}"
            );
        }
        assert!(matches!(
            parse(&replace_line("NarHash", "NarHash: sha512:abc")),
            Err(NarInfoError::BadHash {
                line: 6,
                field: "NarHash",
                source: HashError::UnsupportedAlgorithm { .. }
            })
        ));
        assert!(matches!(
            parse(&replace_line("FileHash", "FileHash: sha256:tooshort")),
            Err(NarInfoError::BadHash {
                field: "FileHash",
                ..
            })
        ));
        for bad in ["+168", "-1", "16 8", "", "99999999999999999999"] {
            assert!(
                matches!(
                    parse(&replace_line("NarSize", &format!("NarSize: {bad}"))),
                    Err(NarInfoError::BadNumber {
                        field: "NarSize",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        for bad in ["nocolon", ":AAAA", "name:"] {
            assert_eq!(
                parse(&replace_line("Sig", &format!("Sig: {bad}"))),
                Err(NarInfoError::BadSig {
                    line: 9,
                    value: bad.to_string()
                })
            );
        }
    }

    #[test]
    fn error_messages_name_the_problem() {
        let e = parse(&replace_line("NarSize", "NarSize: x")).unwrap_err();
        assert_eq!(e.to_string(), "line 7: NarSize is not a number: \"x\"");
        let e = parse(&SAMPLE.replace('\n', "\r\n")).unwrap_err();
        assert!(e.to_string().contains("CRLF"));
    }
}
