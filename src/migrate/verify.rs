//! `cairn admin verify`: audit a nix-cache bucket through the S3 gateway.
//!
//! Two walks, each a paged listing:
//!
//! 1. The narinfos (the bucket's top level, listed with a `/` delimiter so the server skips
//!    `nar/`, `log/`, … in one seek). Each is read and its signature checked against the
//!    trusted keys; the NAR it names goes, with its FileSize and hashes, into a [`Spill`].
//! 2. The NARs (`nar/`), merged in key order with the spilled references, sorted.
//!
//! The merge is what finds dangling narinfos (a reference with no NAR), NARs no narinfo
//! names (a NAR with no reference) and wrong sizes, without a request per object. It needs
//! the references in NAR-name order, but narinfos come in store-hash order, and a NAR's
//! name (its file hash) has nothing to do with its narinfo's; holding every reference in
//! memory would not scale to a cache of a billion objects, and a HEAD per narinfo would
//! find dangling ones but never orphans. So the references are spilled to sorted runs on
//! disk (~200 bytes each, tens of GiB for the largest caches) and merged back: memory stays
//! at one run's budget and one line per run. With `--deep` every matched NAR is read and
//! its FileHash and NarHash recomputed.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cairn_gateway::nix::NixCheckError;
use cairn_gateway::nix::base32::{format_sha256, parse_sha256};
use cairn_gateway::nix::keys::{TrustedKey, verify_narinfo};
use cairn_gateway::nix::nar::{Decompressed, NarVerifier, ObjectKind, classify_key};
use cairn_gateway::nix::narinfo::NarInfo;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::listing::{S3Listing, retry};
use super::progress::{Progress, Snapshot, mib};
use super::s3::S3Client;
use super::spill::Spill;

/// Largest narinfo read; real ones are a few KiB.
const MAX_NARINFO: u64 = 1 << 20;

/// Faults listed by name per kind in the JSON report; beyond it they are counted (and were
/// printed as found).
const MAX_LISTED: usize = 10_000;

/// What one verification needs.
pub struct Verify {
    /// The bucket, through the S3 gateway.
    pub client: S3Client,
    /// Its name, for the report.
    pub bucket: String,
    /// Keys whose signatures count.
    pub trusted: Vec<TrustedKey>,
    /// Also read every NAR and check its hashes.
    pub deep: bool,
    /// Requests in flight at once.
    pub jobs: usize,
    /// Further tries after a transient failure.
    pub retries: u32,
    /// Seconds between plain progress lines.
    pub progress_interval: Duration,
    /// Bytes of NAR references sorted in memory before a run is written to disk.
    pub spill_budget: usize,
}

/// A fault, by object name.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    /// The object it concerns (a narinfo, or a NAR for orphans).
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

/// Faults of one kind.
#[derive(Debug, Default, Serialize)]
pub struct Faults {
    /// How many.
    pub count: u64,
    /// Bytes concerned (orphan NARs).
    pub bytes: u64,
    /// The first 10 000 of them.
    pub items: Vec<Fault>,
}

/// What verification found (`--json` prints it).
#[derive(Debug, Serialize)]
pub struct Report {
    /// The bucket.
    pub bucket: String,
    /// Names of the keys signatures were checked against.
    pub trusted_keys: Vec<String>,
    /// NARs were read and hashed.
    pub deep: bool,
    /// Narinfos read.
    pub narinfos: u64,
    /// NARs listed.
    pub nars: u64,
    /// Their bytes.
    pub nar_bytes: u64,
    /// Narinfos without a valid signature by a trusted key (unsigned, untrusted, forged or
    /// malformed).
    pub bad_signatures: Faults,
    /// Narinfos whose NAR does not exist.
    pub dangling: Faults,
    /// Narinfos whose FileSize is not their NAR's size.
    pub wrong_size: Faults,
    /// NARs no narinfo names, with their total bytes.
    pub orphans: Faults,
    /// With `--deep`: NARs whose bytes do not match a narinfo's FileHash or NarHash.
    pub hash_mismatches: Faults,
    /// Objects that could not be read.
    pub unreadable: Faults,
    /// Every fault above, counted.
    pub faults: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Which list a fault goes to.
#[derive(Clone, Copy)]
enum Kind {
    BadSignature,
    Dangling,
    WrongSize,
    Orphan,
    HashMismatch,
    Unreadable,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::BadSignature => "bad signature",
            Kind::Dangling => "dangling narinfo",
            Kind::WrongSize => "wrong size",
            Kind::Orphan => "orphan NAR",
            Kind::HashMismatch => "hash mismatch",
            Kind::Unreadable => "unreadable",
        }
    }
}

/// Faults as they are found, shared by the walks' threads.
#[derive(Default)]
struct Findings {
    lists: Mutex<[Faults; 6]>,
    total: AtomicU64,
}

impl Findings {
    fn add(&self, progress: &Progress, kind: Kind, key: &str, reason: String, bytes: u64) {
        progress.println(&format!("{}: {key}: {reason}", kind.label()));
        self.total.fetch_add(1, Relaxed);
        let mut lists = self.lists.lock().unwrap_or_else(|p| p.into_inner());
        let list = &mut lists[kind as usize];
        list.count += 1;
        list.bytes += bytes;
        if list.items.len() < MAX_LISTED {
            list.items.push(Fault {
                key: key.to_string(),
                reason,
            });
        }
    }
}

/// A narinfo's reference to its NAR, as spilled: one tab-separated line that sorts by the
/// NAR's key (`\t` sorts below every character of a NAR key).
struct Reference {
    nar: String,
    file_size: Option<u64>,
    file_hash: Option<[u8; 32]>,
    nar_hash: [u8; 32],
    narinfo: String,
}

impl Reference {
    fn line(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}",
            self.nar,
            self.file_size.map_or("-".to_string(), |s| s.to_string()),
            self.file_hash
                .map_or("-".to_string(), |h| format_sha256(&h)),
            format_sha256(&self.nar_hash),
            self.narinfo
        )
    }

    fn parse(line: &str) -> anyhow::Result<Reference> {
        let fields: Vec<&str> = line.split('\t').collect();
        let [nar, size, file_hash, nar_hash, narinfo] = fields[..] else {
            anyhow::bail!("corrupt spill line {line:?}");
        };
        let hash = |text: &str| parse_sha256(text).map_err(|e| anyhow::anyhow!("{e}"));
        Ok(Reference {
            nar: nar.to_string(),
            file_size: match size {
                "-" => None,
                n => Some(n.parse().context("corrupt spill size")?),
            },
            file_hash: match file_hash {
                "-" => None,
                h => Some(hash(h)?),
            },
            nar_hash: hash(nar_hash)?,
            narinfo: narinfo.to_string(),
        })
    }
}

/// Walks the bucket and reports what it found; an error means the walk itself failed.
pub fn run(verify: &Verify) -> anyhow::Result<Report> {
    anyhow::ensure!(
        !verify.trusted.is_empty(),
        "no trusted keys to check signatures against"
    );
    let started = Instant::now();
    let findings = Findings::default();
    let narinfos = AtomicU64::new(0);
    let listed = AtomicU64::new(0);
    let progress = Progress::new(verify.progress_interval, false);

    // Walk 1: narinfos → signature checks and spilled references.
    let spill = Mutex::new(Spill::new(verify.spill_budget).context("creating a spill file")?);
    let spill_error = Mutex::new(None::<std::io::Error>);
    progress.run(
        || Snapshot {
            done: narinfos.load(Relaxed),
            total: listed.load(Relaxed),
            message: format!("narinfos, {} faults", findings.total.load(Relaxed)),
            line: format!(
                "verify: {}/{} narinfos checked, {} faults so far",
                narinfos.load(Relaxed),
                listed.load(Relaxed),
                findings.total.load(Relaxed)
            ),
        },
        || {
            pool(
                verify.jobs,
                |queue| -> anyhow::Result<()> {
                    for entry in S3Listing::new(&verify.client, "", verify.retries).one_level() {
                        let entry = entry?;
                        if entry.key.ends_with(".narinfo") {
                            listed.fetch_add(1, Relaxed);
                            if queue.send(entry.key).is_err() {
                                break;
                            }
                        }
                    }
                    Ok(())
                },
                |key: String| {
                    if let Some(reference) = check_narinfo(verify, &key, &findings, &progress)
                        && let Err(err) = spill
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(reference.line())
                    {
                        spill_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(err);
                    }
                    narinfos.fetch_add(1, Relaxed);
                },
            )
        },
    )?;
    if let Some(err) = spill_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(err).context("writing the spill file");
    }
    let spill = spill.into_inner().unwrap_or_else(|p| p.into_inner());
    if spill.spilled_bytes() > 0 {
        tracing::info!(
            bytes = spill.spilled_bytes(),
            "NAR references spilled to disk for sorting"
        );
    }
    let mut references = spill
        .finish()
        .context("sorting the NAR references")?
        .map(|line| {
            line.map_err(anyhow::Error::from)
                .and_then(|l| Reference::parse(&l))
        })
        .peekable();

    // Walk 2: NARs in key order, merged with the sorted references.
    let nars = AtomicU64::new(0);
    let nar_bytes = AtomicU64::new(0);
    let hashed = AtomicU64::new(0);
    let dangling = |reference: &Reference| {
        findings.add(
            &progress,
            Kind::Dangling,
            &reference.narinfo,
            format!("names {}, which is not in the bucket", reference.nar),
            0,
        );
    };
    progress.run(
        || Snapshot {
            done: if verify.deep {
                hashed.load(Relaxed)
            } else {
                nars.load(Relaxed)
            },
            total: nars.load(Relaxed),
            message: format!("NARs, {} faults", findings.total.load(Relaxed)),
            line: format!(
                "verify: {} NARs ({}) compared{}, {} faults so far",
                nars.load(Relaxed),
                mib(nar_bytes.load(Relaxed)),
                if verify.deep {
                    format!(", {} hashed", hashed.load(Relaxed))
                } else {
                    String::new()
                },
                findings.total.load(Relaxed)
            ),
        },
        || {
            pool(
                if verify.deep { verify.jobs } else { 0 },
                |queue| -> anyhow::Result<()> {
                    for entry in S3Listing::new(&verify.client, "nar/", verify.retries) {
                        let entry = entry?;
                        let key = format!("nar/{}", entry.key);
                        nars.fetch_add(1, Relaxed);
                        nar_bytes.fetch_add(entry.size, Relaxed);
                        // References to NARs that sort before this one name missing NARs.
                        let mut matched = Vec::new();
                        loop {
                            let due = match references.peek() {
                                None => false,
                                Some(Ok(reference)) => reference.nar.as_bytes() <= key.as_bytes(),
                                Some(Err(_)) => true,
                            };
                            if !due {
                                break;
                            }
                            match references.next() {
                                Some(Ok(reference)) if reference.nar == key => {
                                    matched.push(reference);
                                }
                                Some(Ok(reference)) => dangling(&reference),
                                Some(Err(err)) => return Err(err),
                                None => break,
                            }
                        }
                        if matched.is_empty() {
                            findings.add(
                                &progress,
                                Kind::Orphan,
                                &key,
                                format!("no narinfo names it ({} bytes)", entry.size),
                                entry.size,
                            );
                            continue;
                        }
                        for reference in &matched {
                            if let Some(size) = reference.file_size
                                && size != entry.size
                            {
                                findings.add(
                                    &progress,
                                    Kind::WrongSize,
                                    &reference.narinfo,
                                    format!(
                                        "FileSize is {size} but {key} has {} bytes",
                                        entry.size
                                    ),
                                    0,
                                );
                            }
                        }
                        if verify.deep && queue.send((key, matched)).is_err() {
                            break;
                        }
                    }
                    for reference in references.by_ref() {
                        dangling(&reference?);
                    }
                    Ok(())
                },
                |(key, matched): (String, Vec<Reference>)| {
                    check_nar(verify, &key, &matched, &findings, &progress);
                    hashed.fetch_add(1, Relaxed);
                },
            )
        },
    )?;
    progress.finish();

    let [
        bad_signatures,
        dangling,
        wrong_size,
        orphans,
        hash_mismatches,
        unreadable,
    ] = findings
        .lists
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    Ok(Report {
        bucket: verify.bucket.clone(),
        trusted_keys: verify
            .trusted
            .iter()
            .map(|k| k.name().to_string())
            .collect(),
        deep: verify.deep,
        narinfos: narinfos.load(Relaxed),
        nars: nars.load(Relaxed),
        nar_bytes: nar_bytes.load(Relaxed),
        faults: findings.total.load(Relaxed),
        bad_signatures,
        dangling,
        wrong_size,
        orphans,
        hash_mismatches,
        unreadable,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Runs `produce` on this thread, feeding a bounded queue that `workers` threads drain
/// with `work`; with no workers, `produce` gets a queue nobody reads and must not send.
fn pool<T: Send>(
    workers: usize,
    produce: impl FnOnce(&mpsc::SyncSender<T>) -> anyhow::Result<()>,
    work: impl Fn(T) + Sync,
) -> anyhow::Result<()> {
    let (queue, jobs) = mpsc::sync_channel::<T>(workers.max(1) * 2);
    let jobs = Mutex::new(jobs);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let next = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok(item) = next else { break };
                    work(item);
                }
            });
        }
        let result = produce(&queue);
        drop(queue);
        result
    })
}

/// Reads one narinfo and checks its signature; returns the reference to its NAR if it names
/// one (also for a bad signature, so its NAR does not count as an orphan too).
fn check_narinfo(
    verify: &Verify,
    key: &str,
    findings: &Findings,
    progress: &Progress,
) -> Option<Reference> {
    if let Err(err) = classify_key(key) {
        findings.add(progress, Kind::BadSignature, key, err.to_string(), 0);
        return None;
    }
    let body = match retry(verify.retries, || verify.client.get_small(key, MAX_NARINFO)) {
        Ok(body) => body,
        // Deleted between the listing and the read: nothing to check.
        Err(err) if err.is_not_found() => return None,
        Err(err) => {
            findings.add(progress, Kind::Unreadable, key, err.to_string(), 0);
            return None;
        }
    };
    let narinfo = match NarInfo::parse(&body) {
        Ok(narinfo) => narinfo,
        Err(err) => {
            findings.add(
                progress,
                Kind::BadSignature,
                key,
                format!("narinfo malformed: {err}"),
                0,
            );
            return None;
        }
    };
    if let Err(err) = verify_narinfo(key, &body, &verify.trusted) {
        findings.add(progress, Kind::BadSignature, key, err.to_string(), 0);
    }
    let url = narinfo
        .url
        .split_once('?')
        .map_or(narinfo.url.as_str(), |(u, _)| u);
    if !matches!(classify_key(url), Ok(ObjectKind::Nar { .. })) {
        findings.add(
            progress,
            Kind::Dangling,
            key,
            format!("its URL {url:?} is not a NAR name (nar/<hash>.nar[.xz|.zst|…])"),
            0,
        );
        return None;
    }
    Some(Reference {
        nar: url.to_string(),
        file_size: narinfo.file_size,
        file_hash: narinfo.file_hash.filter(|_| verify.deep),
        nar_hash: narinfo.nar_hash,
        narinfo: key.to_string(),
    })
}

/// `--deep`: reads one NAR and checks it against every narinfo that names it.
fn check_nar(
    verify: &Verify,
    key: &str,
    references: &[Reference],
    findings: &Findings,
    progress: &Progress,
) {
    let Ok(ObjectKind::Nar { compression, .. }) = classify_key(key) else {
        return;
    };
    let nar_hashes: BTreeSet<[u8; 32]> = references.iter().map(|r| r.nar_hash).collect();
    let mut verifiers: Vec<([u8; 32], NarVerifier)> = nar_hashes
        .into_iter()
        .map(|hash| (hash, NarVerifier::new(hash, compression)))
        .collect();
    let mut file = Sha256::new();
    let read = retry(verify.retries, || verify.client.get(key)).map_err(|e| e.to_string());
    let result = read.and_then(|mut download| {
        let mut chunk = vec![0u8; 256 << 10];
        loop {
            let n = download
                .body
                .read(&mut chunk)
                .map_err(|e| format!("reading it failed: {e}"))?;
            if n == 0 {
                return Ok(());
            }
            file.update(&chunk[..n]);
            for (_, verifier) in &mut verifiers {
                let _ = verifier.update(&chunk[..n]);
            }
        }
    });
    if let Err(reason) = result {
        findings.add(progress, Kind::Unreadable, key, reason, 0);
        return;
    }
    let file_hash: [u8; 32] = file.finalize().into();
    let mut nar_mismatch = std::collections::BTreeMap::new();
    for (hash, verifier) in verifiers {
        let why = match verifier.finish() {
            Ok(_) => continue,
            Err(NixCheckError::NarMismatch {
                decompressed: Decompressed::Hashed { hash, .. },
                ..
            }) => format!("it decompresses to {}", format_sha256(&hash)),
            Err(NixCheckError::NarMismatch { decompressed, .. }) => decompressed.to_string(),
            Err(err) => err.to_string(),
        };
        nar_mismatch.insert(hash, why);
    }
    for reference in references {
        if let Some(expected) = reference.file_hash
            && expected != file_hash
        {
            findings.add(
                progress,
                Kind::HashMismatch,
                &reference.narinfo,
                format!(
                    "FileHash is {} but {key} hashes to {}",
                    format_sha256(&expected),
                    format_sha256(&file_hash)
                ),
                0,
            );
        }
        if let Some(why) = nar_mismatch.get(&reference.nar_hash) {
            findings.add(
                progress,
                Kind::HashMismatch,
                &reference.narinfo,
                format!(
                    "NarHash is {} but {key} does not match it: {why}",
                    format_sha256(&reference.nar_hash)
                ),
                0,
            );
        }
    }
}

/// The human report.
pub fn print_report(report: &Report) {
    println!(
        "bucket {}: {} narinfos, {} NARs ({}), signatures checked against [{}]{}",
        report.bucket,
        report.narinfos,
        report.nars,
        mib(report.nar_bytes),
        report.trusted_keys.join(", "),
        if report.deep {
            ", NAR hashes checked"
        } else {
            ""
        }
    );
    println!("  bad signatures:   {}", report.bad_signatures.count);
    println!("  dangling:         {}", report.dangling.count);
    println!("  wrong sizes:      {}", report.wrong_size.count);
    println!(
        "  orphan NARs:      {} ({})",
        report.orphans.count,
        mib(report.orphans.bytes)
    );
    if report.deep {
        println!("  hash mismatches:  {}", report.hash_mismatches.count);
    }
    if report.unreadable.count > 0 {
        println!("  unreadable:       {}", report.unreadable.count);
    }
    if report.faults == 0 {
        println!("no faults found ({:.1} s)", report.seconds);
    } else {
        println!(
            "{} faults (each named above) ({:.1} s)",
            report.faults, report.seconds
        );
    }
}
