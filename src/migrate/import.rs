//! `cairn import`: copy a bucket, or a `file://` binary cache, into a bucket.
//!
//! The copy runs in two phases over the source listing: first every object that is not a
//! narinfo (NARs, `nix-cache-info`, `.ls`, logs), then the narinfos, so the destination never
//! serves a narinfo before the NAR it names. Each phase merges the source listing with the
//! destination's (both in key order, page by page) and copies only what the destination
//! lacks or holds differently; a killed import therefore resumes where it stopped, and a run
//! over a finished import copies nothing. With `--since`, only source objects modified since
//! then are considered and each is looked up in the destination (HEAD) instead of walking
//! the destination's whole listing: the short incremental pass of a cut-over.
//!
//! A pool of `--jobs` threads copies; each holds at most one part (`--part-size`) of one
//! object in memory. Objects up to the part size go up in one PutObject, larger ones as
//! multipart uploads, every request with its Content-MD5. Sizes and ETags are checked against
//! the source, and every copy's ETag against the bytes sent. Into a nix-cache bucket
//! (`--nix-cache`) narinfos must carry a signature by a trusted key and NARs hash to their
//! names, checked here before the last byte is sent, and a narinfo goes up only once its NAR
//! is in the destination. Whatever fails is reported by name with the reason, and counted.

use std::io::Read as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use cairn_gateway::nix::keys::{TrustedKey, verify_narinfo};
use cairn_gateway::nix::nar::{NarVerifier, ObjectKind, classify_key};
use md5::{Digest as _, Md5};
use serde::Serialize;

use super::listing::{Diff, Entry, Listing, OpenError, S3Listing, Source, Verdict, same_object};
use super::progress::{Progress, Snapshot, mib};
use super::s3::{S3Client, S3Error, hex, is_plain_md5, read_full};

/// S3 allows at most this many parts in one upload.
const MAX_PARTS: u64 = 10_000;

/// Failures listed by name in the JSON summary; beyond it they are counted (each was also
/// printed as it happened).
const MAX_LISTED_FAILURES: usize = 10_000;

/// Largest narinfo read for checking; real ones are a few KiB.
const MAX_NARINFO: u64 = 1 << 20;

/// Everything one import needs.
pub struct Import {
    /// Where objects come from.
    pub source: Source,
    /// The destination bucket.
    pub destination: S3Client,
    /// Prefix of every destination key (empty or ending in `/`).
    pub destination_prefix: String,
    /// Objects in flight at once.
    pub jobs: usize,
    /// Largest body sent in one request; larger objects go as multipart uploads of parts of
    /// this size.
    pub part_size: u64,
    /// Further tries after a transient failure.
    pub retries: u32,
    /// Only objects modified at or after this time, looked up one by one.
    pub since: Option<jiff::Timestamp>,
    /// Check Nix authenticity against these keys (a nix-cache destination).
    pub nix: Option<Vec<TrustedKey>>,
    /// List what would be copied, copy nothing.
    pub dry_run: bool,
    /// Seconds between plain progress lines (when stderr is not a terminal).
    pub progress_interval: Duration,
}

/// Objects and their bytes.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Count {
    /// Objects.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// One object that was not copied, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// Its key in the source (relative to the source prefix).
    pub key: String,
    /// What went wrong.
    pub reason: String,
}

/// What an import did (`--json` prints it).
#[derive(Debug, Serialize)]
pub struct Summary {
    /// The source, as given.
    pub source: String,
    /// The destination.
    pub destination: String,
    /// Objects the source listing showed (after `--since`).
    pub listed: Count,
    /// Objects copied by this run (with `--dry-run`: that would be copied).
    pub copied: Count,
    /// Objects the destination already held, left alone.
    pub present: Count,
    /// Objects left out by `--since`.
    pub older: Count,
    /// Objects that failed.
    pub failed: u64,
    /// The failures by name (at most 10 000; all were printed as they happened).
    pub failures: Vec<Failure>,
    /// Wall time.
    pub seconds: f64,
    /// Objects copied per second.
    pub objects_per_second: f64,
    /// MiB copied per second.
    pub mib_per_second: f64,
    /// Nothing was written.
    pub dry_run: bool,
}

/// Counters the workers, the lister and the progress reporter share.
#[derive(Default)]
struct Stats {
    listed: Counter,
    present: Counter,
    older: Counter,
    queued: Counter,
    copied: Counter,
    failed: AtomicU64,
    /// Bytes sent so far, parts of unfinished objects included (for the bar).
    moved: AtomicU64,
}

#[derive(Default)]
struct Counter {
    objects: AtomicU64,
    bytes: AtomicU64,
}

impl Counter {
    fn add(&self, bytes: u64) {
        self.objects.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
    }

    fn get(&self) -> Count {
        Count {
            objects: self.objects.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
        }
    }
}

/// Which objects a phase copies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Everything but narinfos.
    Data,
    /// Narinfos, once every NAR is in.
    NarInfos,
}

impl Phase {
    fn wants(self, key: &str) -> bool {
        key.ends_with(".narinfo") == (self == Phase::NarInfos)
    }
}

/// How one try of one object ended badly.
enum CopyError {
    /// Worth another try (the source connection broke, its bytes did not match its ETag…).
    Transient(String),
    /// Final: refused by a check or by the destination, or retried enough.
    Failed(String),
}

/// How one object ended well.
enum Outcome {
    Copied,
    Present,
    WouldCopy,
}

/// Runs the import; failures of single objects are in the summary, an error is returned
/// only when the import itself could not go on (a listing failed).
pub fn run(
    import: &Import,
    source_label: &str,
    destination_label: &str,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let stats = Stats::default();
    let failures = Mutex::new(Vec::new());
    let progress = Progress::new(import.progress_interval, true);
    let result = progress.run(
        || snapshot(&stats, started),
        || -> anyhow::Result<()> {
            for phase in [Phase::Data, Phase::NarInfos] {
                run_phase(import, phase, &stats, &failures, &progress)?;
            }
            Ok(())
        },
    );
    progress.finish();
    result?;
    let seconds = started.elapsed().as_secs_f64();
    let copied = stats.copied.get();
    Ok(Summary {
        source: source_label.to_string(),
        destination: destination_label.to_string(),
        listed: stats.listed.get(),
        copied,
        present: stats.present.get(),
        older: stats.older.get(),
        failed: stats.failed.load(Relaxed),
        failures: failures.into_inner().unwrap_or_else(|p| p.into_inner()),
        seconds,
        objects_per_second: copied.objects as f64 / seconds.max(1e-9),
        mib_per_second: copied.bytes as f64 / (1u64 << 20) as f64 / seconds.max(1e-9),
        dry_run: import.dry_run,
    })
}

fn snapshot(stats: &Stats, started: Instant) -> Snapshot {
    let listed = stats.listed.get();
    let queued = stats.queued.get();
    let copied = stats.copied.get();
    let present = stats.present.get();
    let failed = stats.failed.load(Relaxed);
    let moved = stats.moved.load(Relaxed);
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    Snapshot {
        done: moved.min(queued.bytes),
        total: queued.bytes,
        message: format!(
            "{}/{} obj, {} there, {failed} failed",
            copied.objects, queued.objects, present.objects
        ),
        line: format!(
            "import: listed {} objects; copied {}/{} ({} of {}), {} already there, {failed} \
             failed; {:.1} objects/s, {:.2} MiB/s",
            listed.objects,
            copied.objects,
            queued.objects,
            mib(copied.bytes),
            mib(queued.bytes),
            present.objects,
            copied.objects as f64 / seconds,
            moved as f64 / (1u64 << 20) as f64 / seconds,
        ),
    }
}

/// One pass over the source: the lister (this thread) feeds a bounded queue, `jobs` workers
/// copy. Returns when every queued object is done.
fn run_phase(
    import: &Import,
    phase: Phase,
    stats: &Stats,
    failures: &Mutex<Vec<Failure>>,
    progress: &Progress,
) -> anyhow::Result<()> {
    let source: Listing<'_> = Box::new(
        import
            .source
            .list(import.retries)?
            .filter(move |e| e.as_ref().map_or(true, |e| phase.wants(&e.key))),
    );
    // Without --since the destination's listing is merged with the source's; with it,
    // the few candidates are looked up one by one instead.
    let verdicts: Box<dyn Iterator<Item = anyhow::Result<Verdict>> + Send + '_> = match import.since
    {
        None => {
            let destination: Listing<'_> = Box::new(
                S3Listing::new(
                    &import.destination,
                    &import.destination_prefix,
                    import.retries,
                )
                .filter(move |e| e.as_ref().map_or(true, |e| phase.wants(&e.key))),
            );
            Box::new(Diff::new(source, destination))
        }
        Some(_) => Box::new(source.map(|e| e.map(Verdict::Copy))),
    };
    let check_destination = import.since.is_some();

    let (queue, jobs) = mpsc::sync_channel::<Entry>(import.jobs * 2);
    let jobs = Mutex::new(jobs);
    std::thread::scope(|scope| {
        for _ in 0..import.jobs {
            scope.spawn(|| {
                let mut buffer = Vec::new();
                loop {
                    let next = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok(entry) = next else { break };
                    match copy_object(import, &entry, check_destination, &mut buffer, stats) {
                        Ok(Outcome::Copied) => stats.copied.add(entry.size),
                        Ok(Outcome::Present) => {
                            stats.present.add(entry.size);
                            stats.moved.fetch_add(entry.size, Relaxed);
                        }
                        Ok(Outcome::WouldCopy) => {
                            stats.copied.add(entry.size);
                            stats.moved.fetch_add(entry.size, Relaxed);
                            progress.println(&format!(
                                "would copy {} ({} bytes)",
                                entry.key, entry.size
                            ));
                        }
                        Err(reason) => {
                            stats.failed.fetch_add(1, Relaxed);
                            progress.println(&format!("failed: {}: {reason}", entry.key));
                            let mut list = failures.lock().unwrap_or_else(|p| p.into_inner());
                            if list.len() < MAX_LISTED_FAILURES {
                                list.push(Failure {
                                    key: entry.key.clone(),
                                    reason,
                                });
                            }
                        }
                    }
                }
            });
        }
        let result = (|| -> anyhow::Result<()> {
            for verdict in verdicts {
                match verdict? {
                    Verdict::Present(entry) => {
                        stats.listed.add(entry.size);
                        stats.present.add(entry.size);
                    }
                    Verdict::Copy(entry) => {
                        if let (Some(since), Some(modified)) = (import.since, entry.modified)
                            && modified < since
                        {
                            stats.older.add(entry.size);
                            continue;
                        }
                        stats.listed.add(entry.size);
                        stats.queued.add(entry.size);
                        if queue.send(entry).is_err() {
                            break;
                        }
                    }
                }
            }
            Ok(())
        })();
        // Closing the queue lets the workers finish what is queued and stop.
        drop(queue);
        result
    })
}

/// Copies one object, trying again after transient failures; the error is the reason.
fn copy_object(
    import: &Import,
    entry: &Entry,
    check_destination: bool,
    buffer: &mut Vec<u8>,
    stats: &Stats,
) -> Result<Outcome, String> {
    let kind = match &import.nix {
        Some(_) => classify_key(&entry.key).map_err(|err| err.to_string())?,
        None => ObjectKind::Plain,
    };
    let mut tries = 0;
    loop {
        match try_copy(import, entry, &kind, check_destination, buffer, stats) {
            Ok(outcome) => return Ok(outcome),
            Err(CopyError::Transient(reason)) if tries < import.retries => {
                tracing::debug!(key = %entry.key, %reason, "trying again");
                std::thread::sleep(super::listing::backoff(tries));
                tries += 1;
            }
            Err(CopyError::Transient(reason)) => {
                return Err(format!("{reason} (tried {} times)", tries + 1));
            }
            Err(CopyError::Failed(reason)) => return Err(reason),
        }
    }
}

fn try_copy(
    import: &Import,
    entry: &Entry,
    kind: &ObjectKind,
    check_destination: bool,
    buffer: &mut Vec<u8>,
    stats: &Stats,
) -> Result<Outcome, CopyError> {
    let key = format!("{}{}", import.destination_prefix, entry.key);
    if check_destination
        && let Some(there) = destination_retry(import, || import.destination.head(&key))?
    {
        let there = Entry {
            key: entry.key.clone(),
            size: there.size,
            etag: there.etag,
            modified: None,
        };
        if same_object(entry, &there) {
            return Ok(Outcome::Present);
        }
    }
    if import.dry_run {
        return Ok(Outcome::WouldCopy);
    }
    let mut opened = import.source.open(&entry.key).map_err(|err| match err {
        OpenError::Gone => CopyError::Failed("deleted from the source since it was listed".into()),
        OpenError::Failed(err) if err.is_transient() => {
            CopyError::Transient(format!("reading the source: {err}"))
        }
        OpenError::Failed(err) => CopyError::Failed(format!("the source refused it: {err}")),
        OpenError::Local(err) => CopyError::Failed(format!("cannot read it: {err}")),
    })?;
    let read_failed = |err: std::io::Error| match &import.source {
        // A broken connection to an S3 source is worth another try; a local read error is not.
        Source::S3 { .. } => CopyError::Transient(format!("reading the source: {err}")),
        Source::Dir(_) => CopyError::Failed(format!("cannot read it: {err}")),
    };
    let source_etag = opened.etag.clone().filter(|e| is_plain_md5(e));
    if matches!(kind, ObjectKind::NarInfo { .. }) && opened.size > MAX_NARINFO {
        return Err(CopyError::Failed(format!(
            "a narinfo of {} bytes is not plausible (at most {MAX_NARINFO})",
            opened.size
        )));
    }

    if opened.size <= import.part_size {
        // One request: the whole body is in the buffer, checked before a byte is sent.
        buffer.clear();
        let read = (&mut opened.body)
            .take(opened.size + 1)
            .read_to_end(buffer)
            .map_err(read_failed)?;
        if read as u64 != opened.size {
            return Err(CopyError::Transient(format!(
                "the source sent {read} bytes, it announced {}",
                opened.size
            )));
        }
        let md5: [u8; 16] = Md5::digest(&buffer[..]).into();
        check_source_etag(source_etag.as_deref(), &md5)?;
        match kind {
            ObjectKind::NarInfo { .. } => check_narinfo(import, &entry.key, buffer)?,
            ObjectKind::Nar { hash, compression } => {
                let mut verifier = NarVerifier::new(*hash, *compression);
                let _ = verifier.update(buffer);
                verifier
                    .finish()
                    .map_err(|err| CopyError::Failed(err.to_string()))?;
            }
            ObjectKind::Plain => {}
        }
        let etag = destination_retry(import, || {
            import.destination.put(&key, buffer, &md5, &opened.headers)
        })?;
        stats.moved.fetch_add(opened.size, Relaxed);
        if let Some(etag) = etag.filter(|e| is_plain_md5(e))
            && !etag.eq_ignore_ascii_case(&hex(&md5))
        {
            return Err(CopyError::Transient(format!(
                "the destination's ETag {etag} is not the MD5 of the bytes sent ({})",
                hex(&md5)
            )));
        }
        return Ok(Outcome::Copied);
    }

    // Multipart: one part in the buffer at a time; the NAR check runs over the parts as they
    // go and decides, before the upload is completed, whether it ever becomes visible.
    let part_size = import
        .part_size
        .max(opened.size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20));
    let part_len = usize::try_from(part_size)
        .map_err(|_| CopyError::Failed(format!("a part of {part_size} bytes is too large")))?;
    let upload_id = destination_retry(import, || {
        import.destination.create_multipart(&key, &opened.headers)
    })?;
    let upload = AbortOnDrop {
        client: &import.destination,
        key: &key,
        upload_id: &upload_id,
        armed: true,
    };
    let mut whole = Md5::new();
    let mut verifier = match kind {
        ObjectKind::Nar { hash, compression } => Some(NarVerifier::new(*hash, *compression)),
        _ => None,
    };
    let mut part_md5s = Vec::new();
    let mut etags = Vec::new();
    let mut total = 0u64;
    buffer.resize(part_len, 0);
    loop {
        let n = read_full(&mut opened.body, buffer).map_err(read_failed)?;
        if n == 0 {
            break;
        }
        let chunk = &buffer[..n];
        whole.update(chunk);
        if let Some(verifier) = &mut verifier {
            let _ = verifier.update(chunk);
        }
        let md5: [u8; 16] = Md5::digest(chunk).into();
        let number = u16::try_from(etags.len() + 1)
            .ok()
            .filter(|n| u64::from(*n) <= MAX_PARTS)
            .ok_or_else(|| {
                CopyError::Transient(format!(
                    "the source sent more than the {} bytes it announced",
                    opened.size
                ))
            })?;
        let etag = destination_retry(import, || {
            import
                .destination
                .upload_part(&key, &upload_id, number, chunk, &md5)
        })?;
        if is_plain_md5(&etag) && !etag.eq_ignore_ascii_case(&hex(&md5)) {
            return Err(CopyError::Transient(format!(
                "the destination's ETag {etag} of part {number} is not the MD5 of its bytes"
            )));
        }
        total += n as u64;
        stats.moved.fetch_add(n as u64, Relaxed);
        etags.push(etag);
        part_md5s.extend_from_slice(&md5);
        if n < part_len {
            break;
        }
    }
    if total != opened.size {
        return Err(CopyError::Transient(format!(
            "the source sent {total} bytes, it announced {}",
            opened.size
        )));
    }
    let md5: [u8; 16] = whole.finalize().into();
    check_source_etag(source_etag.as_deref(), &md5)?;
    if let Some(verifier) = verifier {
        // Not completing the upload is what keeps a bad NAR out; the guard aborts it.
        verifier
            .finish()
            .map_err(|err| CopyError::Failed(err.to_string()))?;
    }
    let etag = destination_retry(import, || {
        import
            .destination
            .complete_multipart(&key, &upload_id, &etags)
    })?;
    upload.disarm();
    let expected = format!("{}-{}", hex(&Md5::digest(&part_md5s)), etags.len());
    if etag.contains('-') && !etag.eq_ignore_ascii_case(&expected) {
        return Err(CopyError::Transient(format!(
            "the destination's ETag {etag} is not the multipart ETag of the bytes sent \
             ({expected})"
        )));
    }
    Ok(Outcome::Copied)
}

/// A narinfo goes up only if it is signed by a trusted key and its NAR is already in the
/// destination with the size it gives.
fn check_narinfo(import: &Import, key: &str, body: &[u8]) -> Result<(), CopyError> {
    let Some(trusted) = &import.nix else {
        return Ok(());
    };
    let verified =
        verify_narinfo(key, body, trusted).map_err(|err| CopyError::Failed(err.to_string()))?;
    let narinfo = verified.narinfo();
    let url = narinfo
        .url
        .split_once('?')
        .map_or(narinfo.url.as_str(), |(u, _)| u);
    let nar_key = format!("{}{url}", import.destination_prefix);
    match destination_retry(import, || import.destination.head(&nar_key))? {
        None => Err(CopyError::Failed(format!(
            "its NAR {url} is not in the destination (it failed or is missing from the source), \
             so the narinfo is held back"
        ))),
        Some(info) => match narinfo.file_size {
            Some(size) if size != info.size => Err(CopyError::Failed(format!(
                "its NAR {url} has {} bytes in the destination but the narinfo says FileSize \
                 {size}, so the narinfo is held back",
                info.size
            ))),
            _ => Ok(()),
        },
    }
}

fn check_source_etag(etag: Option<&str>, md5: &[u8; 16]) -> Result<(), CopyError> {
    match etag {
        Some(etag) if !etag.eq_ignore_ascii_case(&hex(md5)) => Err(CopyError::Transient(format!(
            "the bytes read from the source (MD5 {}) do not match its ETag {etag}",
            hex(md5)
        ))),
        _ => Ok(()),
    }
}

/// A destination request with its own retries (the body is still in the buffer, so the
/// source is not read again); what is left is final.
fn destination_retry<T>(
    import: &Import,
    attempt: impl FnMut() -> Result<T, S3Error>,
) -> Result<T, CopyError> {
    super::listing::retry(import.retries, attempt).map_err(|err| {
        if err.is_transient() {
            CopyError::Failed(format!(
                "the destination failed {} times: {err}",
                import.retries + 1
            ))
        } else {
            CopyError::Failed(format!("the destination refused it: {err}"))
        }
    })
}

/// Aborts a multipart upload unless it was completed, so failed copies leave no parts.
struct AbortOnDrop<'a> {
    client: &'a S3Client,
    key: &'a str,
    upload_id: &'a str,
    armed: bool,
}

impl AbortOnDrop<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for AbortOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Err(err) = self.client.abort_multipart(self.key, self.upload_id)
        {
            tracing::warn!(key = self.key, %err, "could not abort a failed multipart upload");
        }
    }
}

/// The human summary.
pub fn print_summary(summary: &Summary) {
    let Summary {
        listed,
        copied,
        present,
        older,
        failed,
        ..
    } = summary;
    if summary.dry_run {
        println!(
            "would copy {} objects ({}); {} already in the destination",
            copied.objects,
            mib(copied.bytes),
            present.objects
        );
    } else if copied.objects == 0 && *failed == 0 {
        println!(
            "nothing to copy: the destination already holds all {} objects ({}) of {}",
            listed.objects,
            mib(listed.bytes),
            summary.source
        );
    } else {
        println!(
            "copied {} objects ({}) in {:.1} s: {:.1} objects/s, {:.2} MiB/s",
            copied.objects,
            mib(copied.bytes),
            summary.seconds,
            summary.objects_per_second,
            summary.mib_per_second
        );
        println!(
            "already in the destination: {} objects ({})",
            present.objects,
            mib(present.bytes)
        );
    }
    if older.objects > 0 {
        println!(
            "left out as older than --since: {} objects ({})",
            older.objects,
            mib(older.bytes)
        );
    }
    if *failed > 0 {
        println!("failed: {failed} objects (each named above with its reason)");
    }
}
