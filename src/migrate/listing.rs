//! Where objects come from and go to, and their listings in key order.
//!
//! Every listing here yields keys in S3's order (bytewise, as ListObjectsV2 returns them),
//! page by page, so two listings can be merged side by side in constant memory: that is how
//! an import finds what the destination already holds ([`Diff`]) and how verification
//! finds NARs no narinfo names.

use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::s3::{ObjectHeaders, S3Client, S3Error};

/// A bucket (and a key prefix in it) or a local binary cache directory, as given on the
/// command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `s3://bucket[/prefix]`; the prefix is empty or ends with `/`.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix every object lives under.
        prefix: String,
    },
    /// `file:///path`: a directory as `nix copy --to file://…` writes it.
    Dir(PathBuf),
}

impl Location {
    /// Parses `s3://bucket[/prefix]` or `file:///absolute/path`.
    pub fn parse(text: &str) -> anyhow::Result<Location> {
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            anyhow::ensure!(
                !bucket.is_empty(),
                "{text:?} names no bucket: expected s3://BUCKET[/PREFIX]"
            );
            let mut prefix = prefix.to_string();
            if !prefix.is_empty() && !prefix.ends_with('/') {
                prefix.push('/');
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix,
            });
        }
        if let Some(path) = text.strip_prefix("file://") {
            // file:///abs/path: the authority is empty; a relative path is refused rather
            // than guessed (file://host/path has no meaning here).
            anyhow::ensure!(
                path.starts_with('/'),
                "{text:?}: expected file:///ABSOLUTE/PATH (three slashes)"
            );
            // Nix store URLs may carry settings (`?compression=zstd`); they mean nothing here.
            let path = path.split_once('?').map_or(path, |(p, _)| p);
            return Ok(Location::Dir(PathBuf::from(path)));
        }
        anyhow::bail!("{text:?} is neither s3://BUCKET[/PREFIX] nor file:///PATH")
    }
}

/// One object: its key relative to the location's prefix, size, ETag and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Key relative to the prefix (for a directory: the relative path with `/`).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag without quotes, if known (S3 sources).
    pub etag: Option<String>,
    /// Last modification time, if known.
    pub modified: Option<jiff::Timestamp>,
}

/// A listing in key order; an error ends it.
pub type Listing<'a> = Box<dyn Iterator<Item = anyhow::Result<Entry>> + Send + 'a>;

/// Pages through ListObjectsV2 under a prefix, retrying a page on transient errors, and
/// refuses a listing that is not in key order (the merges depend on it).
pub struct S3Listing<'a> {
    client: &'a S3Client,
    prefix: String,
    delimiter: Option<&'static str>,
    token: Option<String>,
    page: VecDeque<Entry>,
    started: bool,
    done: bool,
    last: Option<String>,
    retries: u32,
}

impl<'a> S3Listing<'a> {
    /// Lists every object under `prefix`, keys yielded relative to it.
    pub fn new(client: &'a S3Client, prefix: &str, retries: u32) -> S3Listing<'a> {
        S3Listing {
            client,
            prefix: prefix.to_string(),
            delimiter: None,
            token: None,
            page: VecDeque::new(),
            started: false,
            done: false,
            last: None,
            retries,
        }
    }

    /// Lists only the objects directly under `prefix` (not under `prefix…/…`): one level,
    /// with deeper "directories" rolled up and skipped by the server.
    pub fn one_level(mut self) -> S3Listing<'a> {
        self.delimiter = Some("/");
        self
    }

    fn fetch(&mut self) -> anyhow::Result<()> {
        let page = retry(self.retries, || {
            self.client
                .list_page(&self.prefix, self.delimiter, self.token.as_deref())
        })
        .with_context(|| format!("listing {}", self.client.label()))?;
        self.started = true;
        self.done = page.next.is_none();
        self.token = page.next;
        for object in page.objects {
            let Some(relative) = object.key.strip_prefix(&self.prefix) else {
                anyhow::bail!(
                    "listing {} under {:?} returned {:?}, outside the prefix",
                    self.client.label(),
                    self.prefix,
                    object.key
                );
            };
            self.page.push_back(Entry {
                key: relative.to_string(),
                size: object.size,
                etag: object.etag,
                modified: object.modified,
            });
        }
        Ok(())
    }
}

impl Iterator for S3Listing<'_> {
    type Item = anyhow::Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.page.is_empty() {
            if self.started && self.done {
                return None;
            }
            if let Err(err) = self.fetch() {
                self.done = true;
                self.started = true;
                return Some(Err(err));
            }
        }
        let entry = self.page.pop_front()?;
        if let Some(last) = &self.last
            && entry.key.as_bytes() <= last.as_bytes()
        {
            self.done = true;
            self.page.clear();
            return Some(Err(anyhow::anyhow!(
                "{} listed {:?} after {:?}: the listing is not in key order, which \
                 resuming and comparing depend on",
                self.client.label(),
                entry.key,
                last
            )));
        }
        self.last = Some(entry.key.clone());
        Some(Ok(entry))
    }
}

/// Walks a directory in S3 key order: each directory's entries sorted by name, a
/// subdirectory compared as `name/`, so `nar-x` comes before `nar/…` exactly as the keys
/// `nar-x` and `nar/…` sort. One directory's names are held at a time (a binary cache keeps
/// all its narinfos in one directory: some 50 bytes each).
pub struct DirListing {
    root: PathBuf,
    /// Per open directory: its relative prefix and the entries still to visit
    /// (sort name, is a directory).
    stack: Vec<(String, std::vec::IntoIter<(String, bool)>)>,
    failed: bool,
}

impl DirListing {
    /// Lists every regular file under `root`.
    pub fn new(root: &Path) -> anyhow::Result<DirListing> {
        let entries = read_sorted(root)?;
        Ok(DirListing {
            root: root.to_path_buf(),
            stack: vec![(String::new(), entries.into_iter())],
            failed: false,
        })
    }
}

fn read_sorted(dir: &Path) -> anyhow::Result<Vec<(String, bool)>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name().into_string().map_err(|name| {
            anyhow::anyhow!(
                "{}: file name {name:?} is not UTF-8, so it cannot be an object key",
                dir.display()
            )
        })?;
        // Follows symbolic links, as copying a file would.
        let meta = std::fs::metadata(entry.path())
            .with_context(|| format!("cannot read {}", entry.path().display()))?;
        if meta.is_dir() {
            names.push((format!("{name}/"), true));
        } else if meta.is_file() {
            names.push((name, false));
        }
    }
    names.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(names)
}

impl Iterator for DirListing {
    type Item = anyhow::Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            let (prefix, entries) = self.stack.last_mut()?;
            let Some((name, is_dir)) = entries.next() else {
                self.stack.pop();
                continue;
            };
            let key = format!("{prefix}{name}");
            let path = self.root.join(&key);
            if is_dir {
                match read_sorted(&path) {
                    Ok(entries) => self.stack.push((key, entries.into_iter())),
                    Err(err) => {
                        self.failed = true;
                        return Some(Err(err));
                    }
                }
                continue;
            }
            let meta = match std::fs::metadata(&path) {
                Ok(meta) => meta,
                Err(err) => {
                    self.failed = true;
                    return Some(Err(anyhow::anyhow!(
                        "cannot read {}: {err}",
                        path.display()
                    )));
                }
            };
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| jiff::Timestamp::try_from(t).ok());
            return Some(Ok(Entry {
                key,
                size: meta.len(),
                etag: None,
                modified,
            }));
        }
    }
}

/// Where an import reads from.
pub enum Source {
    /// A bucket and a prefix in it.
    S3 {
        /// The bucket's client (boxed: it is much larger than a path).
        client: Box<S3Client>,
        /// Prefix of every key (empty or ending in `/`).
        prefix: String,
    },
    /// A local binary cache directory.
    Dir(PathBuf),
}

/// An object opened for reading.
pub struct Opened {
    /// Its bytes.
    pub body: Box<dyn Read + Send>,
    /// Size the source announced for this read.
    pub size: u64,
    /// ETag the source gave for this read (S3 only).
    pub etag: Option<String>,
    /// Headers to keep on the copy.
    pub headers: ObjectHeaders,
}

/// Why a source object could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// It was deleted since it was listed.
    Gone,
    /// Anything else (transient errors included, for S3).
    Failed(S3Error),
    /// A local read failed.
    Local(std::io::Error),
}

impl Source {
    /// Describes it for messages.
    pub fn label(&self) -> String {
        match self {
            Source::S3 { client, prefix } if prefix.is_empty() => client.label().to_string(),
            Source::S3 { client, prefix } => format!("{} (prefix {prefix})", client.label()),
            Source::Dir(path) => format!("file://{}", path.display()),
        }
    }

    /// Every object, in key order.
    pub fn list(&self, retries: u32) -> anyhow::Result<Listing<'_>> {
        Ok(match self {
            Source::S3 { client, prefix } => Box::new(S3Listing::new(client, prefix, retries)),
            Source::Dir(path) => Box::new(DirListing::new(path)?),
        })
    }

    /// Opens the object with this (relative) key.
    pub fn open(&self, key: &str) -> Result<Opened, OpenError> {
        match self {
            Source::S3 { client, prefix } => {
                let download = client.get(&format!("{prefix}{key}")).map_err(|err| {
                    if err.is_not_found() {
                        OpenError::Gone
                    } else {
                        OpenError::Failed(err)
                    }
                })?;
                Ok(Opened {
                    body: Box::new(download.body),
                    size: download.info.size,
                    etag: download.info.etag,
                    headers: download.info.headers,
                })
            }
            Source::Dir(root) => {
                let path = root.join(key);
                let file = std::fs::File::open(&path).map_err(|err| {
                    if err.kind() == std::io::ErrorKind::NotFound {
                        OpenError::Gone
                    } else {
                        OpenError::Local(err)
                    }
                })?;
                let size = file.metadata().map_err(OpenError::Local)?.len();
                Ok(Opened {
                    body: Box::new(file),
                    size,
                    etag: None,
                    headers: ObjectHeaders {
                        content_type: Some(content_type(key).to_string()),
                        ..ObjectHeaders::default()
                    },
                })
            }
        }
    }
}

/// The content type a binary cache served over HTTP gives each kind of file (as Nix's own
/// HTTP and S3 stores upload them).
fn content_type(key: &str) -> &'static str {
    if key.ends_with(".narinfo") {
        "text/x-nix-narinfo"
    } else if key == "nix-cache-info" {
        "text/x-nix-cache-info"
    } else if key.starts_with("nar/") {
        "application/x-nix-nar"
    } else if key.ends_with(".ls") {
        "application/json"
    } else {
        "application/octet-stream"
    }
}

/// What the merge of a source and a destination listing says about a source object.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The destination has no such key, or a different object under it.
    Copy(Entry),
    /// The destination already holds it (same size, and same ETag where both are MD5s).
    Present(Entry),
}

/// Merges a source listing with the destination's, both in key order.
pub struct Diff<'a> {
    source: Listing<'a>,
    destination: std::iter::Peekable<Listing<'a>>,
}

impl<'a> Diff<'a> {
    /// Compares `source` against `destination`, both relative to their prefixes.
    pub fn new(source: Listing<'a>, destination: Listing<'a>) -> Diff<'a> {
        Diff {
            source,
            destination: destination.peekable(),
        }
    }
}

impl Iterator for Diff<'_> {
    type Item = anyhow::Result<Verdict>;

    fn next(&mut self) -> Option<Self::Item> {
        let entry = match self.source.next()? {
            Ok(entry) => entry,
            Err(err) => return Some(Err(err)),
        };
        // Skip destination keys before this one (objects only the destination has).
        loop {
            match self.destination.peek() {
                Some(Ok(there)) if there.key.as_bytes() < entry.key.as_bytes() => {
                    self.destination.next();
                }
                Some(Err(_)) => {
                    // The destination's listing failed: nothing can be compared any more.
                    return match self.destination.next() {
                        Some(Err(err)) => Some(Err(err)),
                        _ => Some(Err(anyhow::anyhow!("the destination listing failed"))),
                    };
                }
                _ => break,
            }
        }
        let present = match self.destination.peek() {
            Some(Ok(there)) if there.key == entry.key => same_object(&entry, there),
            _ => false,
        };
        Some(Ok(if present {
            Verdict::Present(entry)
        } else {
            Verdict::Copy(entry)
        }))
    }
}

/// Same size, and the same ETag wherever both are plain MD5s (a multipart ETag depends on
/// the part size, and a file has none, so there the size is all that can be compared).
pub fn same_object(source: &Entry, destination: &Entry) -> bool {
    use super::s3::is_plain_md5;
    if source.size != destination.size {
        return false;
    }
    match (&source.etag, &destination.etag) {
        (Some(a), Some(b)) if is_plain_md5(a) && is_plain_md5(b) => a.eq_ignore_ascii_case(b),
        _ => true,
    }
}

/// Runs `attempt` until it succeeds, fails for good, or `retries` further tries failed,
/// waiting 0.2 s, 0.4 s, … (at most 10 s) between tries.
pub fn retry<T>(
    retries: u32,
    mut attempt: impl FnMut() -> Result<T, S3Error>,
) -> Result<T, S3Error> {
    let mut tries = 0;
    loop {
        match attempt() {
            Err(err) if err.is_transient() && tries < retries => {
                std::thread::sleep(backoff(tries));
                tries += 1;
            }
            other => return other,
        }
    }
}

/// The pause before retry number `tries` (from 0): exponential, capped at 10 s.
pub fn backoff(tries: u32) -> std::time::Duration {
    std::time::Duration::from_millis((200u64 << tries.min(6)).min(10_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, size: u64, etag: Option<&str>) -> Entry {
        Entry {
            key: key.into(),
            size,
            etag: etag.map(str::to_string),
            modified: None,
        }
    }

    #[test]
    fn locations() {
        assert_eq!(
            Location::parse("s3://nix").unwrap(),
            Location::S3 {
                bucket: "nix".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            Location::parse("s3://nix/cache").unwrap(),
            Location::S3 {
                bucket: "nix".into(),
                prefix: "cache/".into()
            }
        );
        assert_eq!(
            Location::parse("file:///tmp/out?compression=zstd").unwrap(),
            Location::Dir("/tmp/out".into())
        );
        for bad in ["s3://", "file://relative", "/tmp/out", "http://x/y"] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn directories_list_in_s3_key_order() {
        let dir = tempfile::tempdir().unwrap();
        for file in [
            "nar/b.nar",
            "nar/a.nar",
            "nar-x",
            "nar.txt",
            "a.narinfo",
            "z/y/x",
        ] {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, file).unwrap();
        }
        let keys: Vec<String> = DirListing::new(dir.path())
            .unwrap()
            .map(|e| e.unwrap().key)
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(
            keys,
            [
                "a.narinfo",
                "nar-x",
                "nar.txt",
                "nar/a.nar",
                "nar/b.nar",
                "z/y/x"
            ]
        );
    }

    #[test]
    fn diff_copies_what_is_missing_or_different() {
        let md5 = |c: char| c.to_string().repeat(32);
        let source: Listing<'static> = Box::new(
            vec![
                Ok(entry("a", 1, Some(&md5('a')))),
                Ok(entry("b", 2, Some(&md5('b')))),
                Ok(entry("c", 3, Some(&md5('c')))),
                Ok(entry("d", 4, Some("ffff-2"))),
                Ok(entry("e", 5, None)),
            ]
            .into_iter(),
        );
        let destination: Listing<'static> = Box::new(
            vec![
                Ok(entry("0", 1, None)),
                Ok(entry("a", 1, Some(&md5('a')))),
                Ok(entry("b", 2, Some(&md5('0')))),
                Ok(entry("bb", 9, None)),
                Ok(entry("d", 4, Some(&md5('d')))),
                Ok(entry("e", 6, None)),
            ]
            .into_iter(),
        );
        let verdicts: Vec<(String, bool)> = Diff::new(source, destination)
            .map(|v| match v.unwrap() {
                Verdict::Copy(e) => (e.key, true),
                Verdict::Present(e) => (e.key, false),
            })
            .collect();
        assert_eq!(
            verdicts,
            [
                ("a".to_string(), false),
                ("b".to_string(), true),
                ("c".to_string(), true),
                ("d".to_string(), false),
                ("e".to_string(), true),
            ]
        );
    }
}
