//! Bringing the shard files and the index back into agreement when the store opens.
//!
//! `put` writes the file before the index and `delete` drops the index entry before the file,
//! so after a crash the only disagreements are files without an index entry (unfinished puts,
//! unfinished deletes, stray temp files). Index entries whose file is missing or has the wrong
//! size are not produced by the store itself, but disks and operators do produce them, and
//! an entry the node cannot serve must not be advertised.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;

use cairn_proto::ids::ShardId;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::index::{self, DAMAGED, OUTBOARDS, SHARDS};
use super::{ReconcileReport, StoreError, TMP_DIR, io_at};

/// What reconciliation leaves behind: the report plus the totals the store starts from.
pub(super) struct Reconciled {
    pub(super) report: ReconcileReport,
    pub(super) used: u64,
    pub(super) count: u64,
}

/// Empties `tmp`, removes unindexed files under `shards`, drops unservable index entries.
pub(super) fn reconcile(
    db: &Database,
    shards_dir: &Path,
    tmp_dir: &Path,
) -> Result<Reconciled, StoreError> {
    let mut report = ReconcileReport {
        removed_temp_files: clear_dir(tmp_dir)?,
        ..ReconcileReport::default()
    };

    let indexed = read_index(db)?;
    let mut servable: HashSet<ShardId> = HashSet::with_capacity(indexed.len());
    let mut wrong_size = Vec::new();

    for entry in fs::read_dir(shards_dir).map_err(|err| io_at(shards_dir, err))? {
        let entry = entry.map_err(|err| io_at(shards_dir, err))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|err| io_at(&path, err))?;
        let name = entry.file_name();
        let name = name.to_str();
        if kind.is_dir() && name == Some(TMP_DIR) {
            continue;
        }
        match name {
            Some(prefix) if kind.is_dir() && is_fanout_name(prefix) => {
                for file in fs::read_dir(&path).map_err(|err| io_at(&path, err))? {
                    let file = file.map_err(|err| io_at(&path, err))?;
                    let file_path = file.path();
                    let file_kind = file.file_type().map_err(|err| io_at(&file_path, err))?;
                    let id = file
                        .file_name()
                        .to_str()
                        .and_then(|name| canonical_id(prefix, name));
                    let indexed_size = id.and_then(|id| indexed.get(&id).map(|&size| (id, size)));
                    match indexed_size {
                        Some((id, size)) if file_kind.is_file() => {
                            let len = file.metadata().map_err(|err| io_at(&file_path, err))?.len();
                            if len == size {
                                servable.insert(id);
                            } else {
                                tracing::warn!(
                                    shard = %id,
                                    indexed_size = size,
                                    file_size = len,
                                    "shard file has the wrong size; dropping it"
                                );
                                wrong_size.push(file_path);
                            }
                        }
                        _ => {
                            tracing::info!(path = %file_path.display(), "removing unindexed file");
                            report.removed_orphan_files += remove_any(&file_path, file_kind)?;
                        }
                    }
                }
            }
            _ => {
                tracing::info!(path = %path.display(), "removing unexpected entry in the shard directory");
                report.removed_orphan_files += remove_any(&path, kind)?;
            }
        }
    }

    report.dropped_index_entries = indexed
        .keys()
        .filter(|id| !servable.contains(id))
        .copied()
        .collect();
    drop_entries(db, &report.dropped_index_entries)?;
    // Only now that the index no longer claims them: a crash before this line leaves entries
    // whose files are still there, and the next open drops them again.
    for path in wrong_size {
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_at(&path, err)),
        }
    }

    let mut used = 0u64;
    for (id, size) in &indexed {
        if servable.contains(id) {
            used = used.saturating_add(*size);
        }
    }
    report.shards = servable.len() as u64;
    report.bytes = used;
    Ok(Reconciled {
        count: report.shards,
        used,
        report,
    })
}

/// Whether any fan-out directory holds anything: the sign of shards stored by an earlier run.
pub(super) fn has_shard_files(shards_dir: &Path) -> Result<bool, StoreError> {
    for entry in fs::read_dir(shards_dir).map_err(|err| io_at(shards_dir, err))? {
        let entry = entry.map_err(|err| io_at(shards_dir, err))?;
        let path = entry.path();
        let is_fanout = entry.file_name().to_str().is_some_and(is_fanout_name)
            && entry.file_type().map_err(|err| io_at(&path, err))?.is_dir();
        if is_fanout
            && fs::read_dir(&path)
                .map_err(|err| io_at(&path, err))?
                .next()
                .is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Every indexed shard and its size. A record that does not decode fails the open: silently
/// dropping it could throw away a shard the coordinator counts on.
fn read_index(db: &Database) -> Result<BTreeMap<ShardId, u64>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(SHARDS)?;
    let mut out = BTreeMap::new();
    for row in table.iter()? {
        let (key, value) = row?;
        let id = ShardId(key.value());
        let meta = index::decode_meta(id, value.value())?;
        out.insert(id, meta.size);
    }
    Ok(out)
}

/// Removes the given shards, and any outboard or damage mark without a shard, in one durable
/// commit.
fn drop_entries(db: &Database, dropped: &[ShardId]) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    let mut changed = false;
    {
        let mut shards = txn.open_table(SHARDS)?;
        let mut outboards = txn.open_table(OUTBOARDS)?;
        let mut damaged = txn.open_table(DAMAGED)?;
        for id in dropped {
            shards.remove(id.0)?;
            outboards.remove(id.0)?;
            damaged.remove(id.0)?;
            changed = true;
        }
        // Strays can only come from a bug or an older build, but they would otherwise sit in
        // the index forever. Outboards are big, so they are only walked when the (O(1)) row
        // counts say some are stray; damage marks are few and always checked.
        let mut strays = Vec::new();
        if outboards.len()? > shards.len()? {
            for row in outboards.iter()? {
                let key = row?.0.value();
                if shards.get(key)?.is_none() {
                    strays.push(key);
                }
            }
        }
        for row in damaged.iter()? {
            let key = row?.0.value();
            if shards.get(key)?.is_none() {
                strays.push(key);
            }
        }
        for key in strays {
            outboards.remove(key)?;
            damaged.remove(key)?;
            changed = true;
        }
    }
    if changed {
        txn.commit()?;
    } else {
        txn.abort()?;
    }
    Ok(())
}

/// Deletes everything inside `dir`, returning how many files went.
fn clear_dir(dir: &Path) -> Result<u64, StoreError> {
    let mut removed = 0;
    for entry in fs::read_dir(dir).map_err(|err| io_at(dir, err))? {
        let entry = entry.map_err(|err| io_at(dir, err))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|err| io_at(&path, err))?;
        removed += remove_any(&path, kind)?;
    }
    Ok(removed)
}

/// Removes a file, symlink or whole directory tree (never following links), returning how
/// many non-directory entries it held.
fn remove_any(path: &Path, kind: fs::FileType) -> Result<u64, StoreError> {
    if kind.is_dir() {
        let mut removed = 0;
        for entry in fs::read_dir(path).map_err(|err| io_at(path, err))? {
            let entry = entry.map_err(|err| io_at(path, err))?;
            let child = entry.path();
            let child_kind = entry.file_type().map_err(|err| io_at(&child, err))?;
            removed += remove_any(&child, child_kind)?;
        }
        fs::remove_dir(path).map_err(|err| io_at(path, err))?;
        Ok(removed)
    } else {
        match fs::remove_file(path) {
            Ok(()) => Ok(1),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(err) => Err(io_at(path, err)),
        }
    }
}

/// Two lowercase hex digits: the only directory names `put` creates besides `tmp`.
fn is_fanout_name(name: &str) -> bool {
    name.len() == 2
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The shard a file name stands for, if it is exactly the name `put` would give it in the
/// fan-out directory `prefix` (so `AB…` or a file in the wrong directory counts as an orphan).
fn canonical_id(prefix: &str, name: &str) -> Option<ShardId> {
    let id: ShardId = name.parse().ok()?;
    let hex = id.to_hex();
    (hex == name && hex.get(..2) == Some(prefix)).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_names_are_shards() {
        let id = ShardId([0xab; 16]);
        let hex = id.to_hex();
        assert_eq!(canonical_id("ab", &hex), Some(id));
        assert_eq!(canonical_id("cd", &hex), None);
        assert_eq!(canonical_id("ab", &hex.to_uppercase()), None);
        assert_eq!(canonical_id("ab", &format!("{hex}.tmp")), None);
        assert!(is_fanout_name("0f"));
        assert!(!is_fanout_name("0F"));
        assert!(!is_fanout_name("tmp"));
    }
}
