//! The node's shard store: shard bytes in plain files, their index in redb, crash-safe.
//!
//! # Layout
//!
//! ```text
//! <dir>/index.redb                   metadata, slice outboards, damage marks, order serials
//! <dir>/shards/tmp/                  shards being written; emptied on every open
//! <dir>/shards/<2 hex>/<32 hex id>   one file per shard, fanned out by the id's first byte
//! ```
//!
//! # Crash safety
//!
//! A shard exists when, and only when, the index has a row for it. The order of operations
//! makes every crash leave at worst files the index does not know about, which
//! [`ShardStore::open`] deletes:
//!
//! - `put` writes a temp file, fsyncs it, renames it into place and fsyncs the fan-out
//!   directory; only then does it commit the index row (durably) and acknowledge. A crash
//!   before the commit leaves an unindexed file; a crash after it leaves a complete shard.
//! - `delete` commits the removal of the row first and unlinks the file afterwards; a crash in
//!   between leaves an unindexed file.
//!
//! Each shard's slice outboard lives next to its metadata in the same commit, so a shard is
//! never indexed without the hashes needed to prove slices of it.
//!
//! Because reconciling deletes every file the index does not know, `open` refuses to run when
//! `index.redb` is missing or empty but shard files exist: a lost index must not silently
//! become an empty store.
//!
//! # Concurrency
//!
//! All methods are synchronous and take `&self`. Operations on one shard id are serialised by a
//! striped read/write lock (writers: `put`, `delete`; readers: `prove`, `verify`), so a proof
//! never reads a file that a concurrent put or delete is swapping. No stripe lock is taken
//! while a redb write transaction is open, which keeps the two kinds of lock from deadlocking.

mod index;
mod reconcile;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use cairn_erasure::ShardRoot;
use cairn_erasure::slice::{ProofError, SliceOutboard};
use cairn_proto::ids::ShardId;
use redb::{Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable};

use index::{DAMAGED, OUTBOARDS, SERIAL_EXPIRY, SERIALS, SHARDS};

/// Name of the temp directory inside `shards/`.
const TMP_DIR: &str = "tmp";

/// Stripes of the per-id lock: enough that unrelated shards rarely share one on a node with
/// a handful of request threads, small enough to be negligible memory.
const LOCK_STRIPES: usize = 64;

/// `verify` proves the shard in pieces of this size so memory stays bounded for any shard;
/// a multiple of the 16 KiB proof chunk group so no group is read twice.
const VERIFY_STEP: u64 = 1 << 20;

/// How long past its expiry a serial is kept: orders are rejected once expired, and the hour
/// covers clock skew between the coordinator and this node.
const SERIAL_GRACE_SECS: u64 = 3600;

/// What the store knows about one stored shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardMeta {
    /// BLAKE3 root of the shard's bytes.
    pub root: ShardRoot,
    /// Length of the shard in bytes.
    pub size: u64,
    /// When the shard was (last) written, in unix seconds.
    pub stored_at: u64,
}

/// What [`ShardStore::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Shards stored after reconciling.
    pub shards: u64,
    /// Bytes of those shards.
    pub bytes: u64,
    /// Files removed from `shards/tmp` (puts that never finished).
    pub removed_temp_files: u64,
    /// Files removed from the fan-out directories because the index did not know them
    /// (unfinished puts or deletes, or names the store never writes).
    pub removed_orphan_files: u64,
    /// Shards that were indexed but whose file was missing or had the wrong size; they are
    /// no longer stored and the coordinator should learn they are lost.
    pub dropped_index_entries: Vec<ShardId>,
}

/// Quota held for one incoming shard, from admission until it is stored.
///
/// Taken with [`ShardStore::reserve`] before any byte of the shard is received, so a node
/// never accepts more than it can hold. Consumed by [`ShardStore::put`]; dropping it unused
/// gives the quota back.
#[derive(Debug)]
pub struct Reservation {
    size: u64,
    pool: Arc<AtomicU64>,
}

impl Reservation {
    /// The number of bytes reserved: the exact size the shard must have.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.pool.fetch_sub(self.size, Ordering::SeqCst);
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the data directory failed.
    #[error("shard store I/O failed: {0}")]
    Io(#[from] io::Error),
    /// The index database failed or holds a value this build cannot read.
    #[error("shard index: {0}")]
    Db(String),
    /// Storing `needed` more bytes would exceed the store's capacity.
    #[error("over quota: {needed} bytes needed but only {free} free")]
    OverQuota {
        /// Bytes asked for.
        needed: u64,
        /// Bytes neither stored nor reserved.
        free: u64,
    },
    /// The bytes offered do not hash to the root they were offered under.
    #[error("shard bytes hash to root {actual}, expected {expected}")]
    RootMismatch {
        /// Root the shard was offered under.
        expected: ShardRoot,
        /// Root of the bytes actually received.
        actual: ShardRoot,
    },
    /// The bytes offered are not the size that was reserved for them.
    #[error("shard is {actual} bytes but {expected} bytes were reserved for it")]
    SizeMismatch {
        /// Size reserved.
        expected: u64,
        /// Size received.
        actual: u64,
    },
    /// No shard with this id is stored here.
    #[error("shard {0} is not stored here")]
    NotFound(ShardId),
    /// The shard's stored bytes no longer match its root (it is now marked damaged).
    #[error("shard {0} is damaged: its stored bytes no longer match its root")]
    Damaged(ShardId),
    /// A slice that is empty or reaches past the end of the shard.
    #[error("range {start}..{end} is not a non-empty range within the shard's {size} bytes")]
    BadRange {
        /// Start asked for.
        start: u64,
        /// End asked for.
        end: u64,
        /// Size of the shard.
        size: u64,
    },
    /// The id is already stored with different contents.
    #[error("shard {0} is already stored with a different root")]
    Conflict(ShardId),
}

/// Wraps an I/O error with the path it happened on, which is what an operator needs to act.
fn io_at(path: &Path, err: io::Error) -> StoreError {
    StoreError::Io(io::Error::new(
        err.kind(),
        format!("{}: {err}", path.display()),
    ))
}

/// Crash-safe store of the shards this node holds, under a fixed capacity.
///
/// Cheap to share: wrap it in an `Arc` and call it from blocking threads.
pub struct ShardStore {
    shards_dir: PathBuf,
    tmp_dir: PathBuf,
    db: Database,
    capacity: u64,
    /// Bytes of indexed shards.
    used: AtomicU64,
    /// Number of indexed shards.
    count: AtomicU64,
    /// Bytes held by live [`Reservation`]s, shared with them so they can release on drop.
    reserved: Arc<AtomicU64>,
    /// Makes temp file names unique within this process (the redb lock keeps out others).
    temp_seq: AtomicU64,
    /// Fan-out directories whose entry in `shards/` is known to be durable, so `put` fsyncs
    /// `shards/` only the first time it uses a directory.
    fanout_durable: Box<[AtomicBool]>,
    locks: Box<[RwLock<()>]>,
}

impl std::fmt::Debug for ShardStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardStore")
            .field("shards_dir", &self.shards_dir)
            .field("capacity", &self.capacity)
            .field("used", &self.used())
            .field("shard_count", &self.shard_count())
            .field("reserved", &self.reserved.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl ShardStore {
    /// Opens (creating if needed) the store in `dir` with room for `capacity` bytes of
    /// shards, and reconciles the files with the index (see [`ReconcileReport`]).
    ///
    /// Safe after a crash at any point of any operation. Fails if another process has the
    /// store open.
    pub fn open(dir: &Path, capacity: u64) -> Result<(ShardStore, ReconcileReport), StoreError> {
        let shards_dir = dir.join("shards");
        let tmp_dir = shards_dir.join(TMP_DIR);
        fs::create_dir_all(&tmp_dir).map_err(|err| io_at(&tmp_dir, err))?;

        let db_path = dir.join("index.redb");
        let index_missing = match fs::metadata(&db_path) {
            Ok(meta) => meta.len() == 0,
            Err(err) if err.kind() == io::ErrorKind::NotFound => true,
            Err(err) => return Err(io_at(&db_path, err)),
        };
        // Without the index every shard file looks like an orphan, and reconciling would delete
        // the node's whole store over one lost or misplaced file.
        if index_missing && reconcile::has_shard_files(&shards_dir)? {
            return Err(StoreError::Db(format!(
                "{} is missing but {} holds shard files; refusing to open (which would delete \
                 them) without the index",
                db_path.display(),
                shards_dir.display()
            )));
        }
        let db = Database::create(&db_path)
            .map_err(|err| StoreError::Db(format!("cannot open {}: {err}", db_path.display())))?;
        index::init(&db)?;

        let reconciled = reconcile::reconcile(&db, &shards_dir, &tmp_dir)?;

        // Directories created just now, or by a run that was killed before it synced them,
        // may exist only in the page cache; make them durable before acknowledging anything
        // stored in them.
        sync_dir(dir)?;
        sync_dir(&shards_dir)?;
        let fanout_durable: Box<[AtomicBool]> = (0..=u8::MAX)
            .map(|byte| AtomicBool::new(shards_dir.join(format!("{byte:02x}")).is_dir()))
            .collect();

        let report = reconciled.report;
        tracing::info!(
            dir = %dir.display(),
            shards = report.shards,
            bytes = report.bytes,
            capacity,
            removed_temp_files = report.removed_temp_files,
            removed_orphan_files = report.removed_orphan_files,
            dropped_index_entries = report.dropped_index_entries.len(),
            "shard store opened"
        );
        for id in &report.dropped_index_entries {
            tracing::warn!(shard = %id, "indexed shard's file was missing or the wrong size; dropped");
        }
        if reconciled.used > capacity {
            tracing::warn!(
                used = reconciled.used,
                capacity,
                "stored shards exceed the capacity; no new shard will be accepted"
            );
        }

        let store = ShardStore {
            shards_dir,
            tmp_dir,
            db,
            capacity,
            used: AtomicU64::new(reconciled.used),
            count: AtomicU64::new(reconciled.count),
            reserved: Arc::new(AtomicU64::new(0)),
            temp_seq: AtomicU64::new(0),
            fanout_durable,
            locks: (0..LOCK_STRIPES).map(|_| RwLock::new(())).collect(),
        };
        Ok((store, report))
    }

    /// The most bytes of shards this store will hold.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes of shards stored (reservations not included).
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }

    /// Number of shards stored.
    pub fn shard_count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Holds `size` bytes of quota for a shard about to arrive.
    ///
    /// Fails with [`StoreError::OverQuota`] if stored plus reserved bytes would exceed the
    /// capacity; concurrent callers can never oversubscribe it.
    pub fn reserve(&self, size: u64) -> Result<Reservation, StoreError> {
        // `reserved` is read before `used`: `put` raises `used` before releasing its
        // reservation, so a put finishing between the two loads is counted twice (refusing
        // early, safely) and never not at all. The CAS fails if a put released in between.
        let mut reserved = self.reserved.load(Ordering::SeqCst);
        loop {
            let used = self.used.load(Ordering::SeqCst);
            let taken = used.saturating_add(reserved);
            let fits = taken
                .checked_add(size)
                .is_some_and(|total| total <= self.capacity);
            if !fits {
                return Err(StoreError::OverQuota {
                    needed: size,
                    free: self.capacity.saturating_sub(taken),
                });
            }
            match self.reserved.compare_exchange(
                reserved,
                reserved + size,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => {
                    return Ok(Reservation {
                        size,
                        pool: Arc::clone(&self.reserved),
                    });
                }
                Err(now) => reserved = now,
            }
        }
    }

    /// Stores `bytes` as shard `shard` with root `root`, using up `reservation`.
    ///
    /// The bytes are checked against the reservation's size and the root before anything is
    /// written. When this returns `Ok`, the shard is durable. Storing an id again with the
    /// same root succeeds without rewriting (unless the stored copy is marked damaged, in
    /// which case it is replaced: that is how a damaged shard is repaired); with a different
    /// root it is a [`StoreError::Conflict`].
    pub fn put(
        &self,
        reservation: Reservation,
        shard: ShardId,
        root: ShardRoot,
        bytes: &[u8],
    ) -> Result<ShardMeta, StoreError> {
        if !Arc::ptr_eq(&reservation.pool, &self.reserved) {
            return Err(StoreError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the reservation was made on a different shard store",
            )));
        }
        let size = bytes.len() as u64;
        if size != reservation.size {
            return Err(StoreError::SizeMismatch {
                expected: reservation.size,
                actual: size,
            });
        }
        // Hashing is the expensive part of a put; it runs before the id's lock is taken.
        let outboard = SliceOutboard::compute(bytes);
        if outboard.root() != root {
            return Err(StoreError::RootMismatch {
                expected: root,
                actual: outboard.root(),
            });
        }

        let _guard = self.write_lock(shard);
        let replacing = {
            let txn = self.db.begin_read()?;
            match read_meta(&txn, shard)? {
                Some(existing) if existing.root != root => {
                    return Err(StoreError::Conflict(shard));
                }
                Some(existing) => {
                    if !is_damaged(&txn, shard)? {
                        return Ok(existing);
                    }
                    true
                }
                None => false,
            }
        };

        let temp = self.write_temp(shard, bytes)?;
        let prefix = shard.0[0];
        self.ensure_fanout(prefix)?;
        let path = self.shard_path(shard);
        // From here on a failure leaves the renamed file in place: a failed commit may still
        // have reached the disk, and while an unindexed file is removed by the next open, an
        // indexed shard whose file was deleted would be lost.
        fs::rename(&temp.path, &path).map_err(|err| io_at(&path, err))?;
        temp.disarm();
        sync_dir(&self.fanout_dir(prefix))?;

        let meta = ShardMeta {
            root,
            size,
            stored_at: unix_now(),
        };
        let txn = self.db.begin_write()?;
        {
            txn.open_table(SHARDS)?
                .insert(shard.0, index::encode_meta(&meta)?.as_slice())?;
            txn.open_table(OUTBOARDS)?
                .insert(shard.0, outboard.hashes())?;
            txn.open_table(DAMAGED)?.remove(shard.0)?;
        }
        txn.commit()?;

        if replacing {
            tracing::info!(shard = %shard, size, "damaged shard replaced with good bytes");
        } else {
            // Before the reservation is released: see `reserve`.
            self.used.fetch_add(size, Ordering::SeqCst);
            self.count.fetch_add(1, Ordering::SeqCst);
            tracing::debug!(shard = %shard, size, "shard stored");
        }
        drop(reservation);
        Ok(meta)
    }

    /// The metadata of `shard`, if it is stored.
    pub fn meta(&self, shard: ShardId) -> Result<Option<ShardMeta>, StoreError> {
        let txn = self.db.begin_read()?;
        read_meta(&txn, shard)
    }

    /// A slice proof for bytes `range` of `shard` (see `cairn_erasure::slice::SliceProof`).
    ///
    /// Every byte read is checked against the root; if the stored bytes have rotted the shard
    /// is marked damaged and [`StoreError::Damaged`] returned rather than a bad proof. A 0-byte
    /// shard has no provable range: asking for `0..0` of it returns an empty proof.
    pub fn prove(&self, shard: ShardId, range: Range<u64>) -> Result<Vec<u8>, StoreError> {
        let _guard = self.read_lock(shard);
        let (meta, hashes) = self.read_entry(shard)?;
        if meta.size == 0 && range == (0..0) {
            return Ok(Vec::new());
        }
        if range.start >= range.end || range.end > meta.size {
            return Err(StoreError::BadRange {
                start: range.start,
                end: range.end,
                size: meta.size,
            });
        }
        let outboard = outboard_of(shard, meta, hashes)?;
        let file = match File::open(self.shard_path(shard)) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                self.set_damaged(shard, true, "shard file is missing")?;
                return Err(StoreError::Damaged(shard));
            }
            Err(err) => return Err(io_at(&self.shard_path(shard), err)),
        };
        match outboard.prove(&file, range.clone()) {
            Ok(proof) => Ok(proof.into_bytes()),
            Err(ProofError::Damaged(why)) => {
                self.set_damaged(shard, true, &why)?;
                Err(StoreError::Damaged(shard))
            }
            Err(ProofError::Io(err)) => Err(io_at(&self.shard_path(shard), err)),
            Err(ProofError::InvalidRange { start, end, size }) => {
                Err(StoreError::BadRange { start, end, size })
            }
            Err(other) => Err(StoreError::Db(format!(
                "outboard of shard {shard} is unusable: {other}"
            ))),
        }
    }

    /// Removes `shard`, returning whether it was stored.
    ///
    /// The index entry goes first (durably), then the file. If the file cannot be unlinked
    /// the shard is still gone as far as the store is concerned; the file is logged and
    /// removed by the next open.
    pub fn delete(&self, shard: ShardId) -> Result<bool, StoreError> {
        let _guard = self.write_lock(shard);
        let txn = self.db.begin_write()?;
        let removed = {
            let mut shards = txn.open_table(SHARDS)?;
            let removed = shards.remove(shard.0)?;
            match removed {
                Some(value) => {
                    let meta = index::decode_meta(shard, value.value())?;
                    txn.open_table(OUTBOARDS)?.remove(shard.0)?;
                    txn.open_table(DAMAGED)?.remove(shard.0)?;
                    Some(meta)
                }
                None => None,
            }
        };
        let Some(meta) = removed else {
            txn.abort()?;
            return Ok(false);
        };
        txn.commit()?;
        self.used.fetch_sub(meta.size, Ordering::SeqCst);
        self.count.fetch_sub(1, Ordering::SeqCst);

        let path = self.shard_path(shard);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => tracing::warn!(
                shard = %shard,
                path = %path.display(),
                error = %err,
                "shard deleted from the index but its file could not be removed; the next open removes it"
            ),
        }
        tracing::debug!(shard = %shard, size = meta.size, "shard deleted");
        Ok(true)
    }

    /// Every shard this node can serve, in id order: indexed, its file present, and not
    /// marked damaged. What the coordinator checks against the catalog, so a shard whose
    /// file vanished (a wiped disk, an operator's `rm`) shows up as missing and is rebuilt
    /// elsewhere, while the node tells no lie about it.
    pub fn inventory(&self) -> Result<Vec<ShardId>, StoreError> {
        let txn = self.db.begin_read()?;
        let damaged: std::collections::HashSet<[u8; 16]> = txn
            .open_table(DAMAGED)?
            .iter()?
            .map(|row| row.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()?;
        let table = txn.open_table(SHARDS)?;
        let mut ids = Vec::new();
        for row in table.iter()? {
            let id = ShardId(row?.0.value());
            if !damaged.contains(&id.0) && self.shard_path(id).is_file() {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Re-reads all of `shard` and checks it (and its stored outboard) against its root,
    /// returning whether it is intact. Marks the shard damaged, or clears the mark, to match.
    ///
    /// A 0-byte shard cannot rot; it is intact if its (empty) file is there.
    pub fn verify(&self, shard: ShardId) -> Result<bool, StoreError> {
        let _guard = self.read_lock(shard);
        let (meta, hashes) = self.read_entry(shard)?;
        let (intact, why) = self.check_file(shard, meta, hashes)?;
        self.set_damaged(shard, !intact, &why)?;
        Ok(intact)
    }

    /// Up to `max` stored shards (id and size) with ids strictly after `after`, in id order:
    /// a background scrub pages through the store with it and can resume after a restart.
    pub fn scrub_batch(
        &self,
        after: Option<ShardId>,
        max: usize,
    ) -> Result<Vec<(ShardId, u64)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SHARDS)?;
        let rows = match after {
            Some(after) => table.range::<[u8; 16]>((
                std::ops::Bound::Excluded(after.0),
                std::ops::Bound::Unbounded,
            ))?,
            None => table.iter()?,
        };
        let mut out = Vec::new();
        for row in rows.take(max) {
            let (key, value) = row?;
            let id = ShardId(key.value());
            out.push((id, index::decode_meta(id, value.value())?.size));
        }
        Ok(out)
    }

    /// Shards found not to match their root and not since replaced or verified intact.
    pub fn damaged(&self) -> Result<Vec<ShardId>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DAMAGED)?;
        let mut ids = Vec::new();
        for row in table.iter()? {
            ids.push(ShardId(row?.0.value()));
        }
        Ok(ids)
    }

    /// Records an order's `serial` for replay protection, returning `true` the first time it
    /// is seen and `false` on a replay.
    ///
    /// Serials are forgotten an hour after `expires_at`, so callers must refuse expired orders
    /// before asking. `durable: false` commits without fsync, for read-only orders whose replay
    /// after a crash does no harm; the next durable commit makes it durable too.
    pub fn record_serial(
        &self,
        serial: u64,
        expires_at: u64,
        durable: bool,
    ) -> Result<bool, StoreError> {
        self.record_serial_at(serial, expires_at, durable, unix_now())
    }

    /// [`ShardStore::record_serial`] at `now` (seconds since the Unix epoch in the
    /// coordinator's clock, which the order's expiry is in).
    pub fn record_serial_at(
        &self,
        serial: u64,
        expires_at: u64,
        durable: bool,
        now: u64,
    ) -> Result<bool, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        let cutoff = now.saturating_sub(SERIAL_GRACE_SECS);
        let (first, pruned) = {
            let mut serials = txn.open_table(SERIALS)?;
            let mut expiry = txn.open_table(SERIAL_EXPIRY)?;
            let first = serials.get(serial)?.is_none();
            if first {
                serials.insert(serial, expires_at)?;
                expiry.insert((expires_at, serial), ())?;
            }
            let mut stale = Vec::new();
            expiry.retain_in::<(u64, u64), _>(..(cutoff, 0), |(_, serial), ()| {
                stale.push(serial);
                false
            })?;
            for old in &stale {
                serials.remove(*old)?;
            }
            (first, stale.len())
        };
        if first || pruned > 0 {
            txn.commit()?;
        } else {
            txn.abort()?;
        }
        if pruned > 0 {
            tracing::debug!(pruned, "expired order serials pruned");
        }
        Ok(first)
    }

    /// Reads the file of `shard` in full and checks it against `meta` and its outboard;
    /// returns whether it is intact and, if not, why.
    fn check_file(
        &self,
        shard: ShardId,
        meta: ShardMeta,
        hashes: Vec<u8>,
    ) -> Result<(bool, String), StoreError> {
        let path = self.shard_path(shard);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Ok((false, "shard file is missing".into()));
            }
            Err(err) => return Err(io_at(&path, err)),
        };
        let len = file.metadata().map_err(|err| io_at(&path, err))?.len();
        if len != meta.size {
            return Ok((
                false,
                format!("file is {len} bytes, {} expected", meta.size),
            ));
        }
        if meta.size == 0 {
            return Ok((true, String::new()));
        }
        // Proving every byte checks the file and the stored outboard in one pass, in bounded
        // memory: a plain re-hash would miss an outboard that no longer matches the root.
        let outboard = outboard_of(shard, meta, hashes)?;
        let mut start = 0;
        while start < meta.size {
            let end = meta.size.min(start + VERIFY_STEP);
            match outboard.prove(&file, start..end) {
                Ok(_) => {}
                Err(ProofError::Damaged(why)) => return Ok((false, why)),
                Err(ProofError::Io(err)) => return Err(io_at(&path, err)),
                Err(other) => {
                    return Err(StoreError::Db(format!(
                        "outboard of shard {shard} is unusable: {other}"
                    )));
                }
            }
            start = end;
        }
        Ok((true, String::new()))
    }

    /// Sets or clears the damage mark of `shard`, writing only if it changes.
    fn set_damaged(&self, shard: ShardId, damaged: bool, why: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        let changed = {
            let mut table = txn.open_table(DAMAGED)?;
            let marked = table.get(shard.0)?.is_some();
            // The caller holds the id's lock, so the shard cannot have been deleted since it
            // was read; the check only keeps a mark from outliving its shard if that changes.
            let exists = txn.open_table(SHARDS)?.get(shard.0)?.is_some();
            match (marked, damaged && exists) {
                (false, true) => {
                    table.insert(shard.0, unix_now())?;
                    true
                }
                (true, false) => {
                    table.remove(shard.0)?;
                    true
                }
                _ => false,
            }
        };
        if !changed {
            txn.abort()?;
            return Ok(());
        }
        txn.commit()?;
        if damaged {
            tracing::warn!(shard = %shard, reason = why, "shard is damaged");
        } else {
            tracing::info!(shard = %shard, "shard verified intact again; damage mark cleared");
        }
        Ok(())
    }

    /// The metadata and outboard hashes of a stored shard.
    fn read_entry(&self, shard: ShardId) -> Result<(ShardMeta, Vec<u8>), StoreError> {
        let txn = self.db.begin_read()?;
        let meta = read_meta(&txn, shard)?.ok_or(StoreError::NotFound(shard))?;
        let hashes = txn
            .open_table(OUTBOARDS)?
            .get(shard.0)?
            .map(|value| value.value().to_vec())
            .ok_or_else(|| {
                StoreError::Db(format!("index has no outboard for stored shard {shard}"))
            })?;
        Ok((meta, hashes))
    }

    /// Writes `bytes` to a new temp file and fsyncs it; the file is removed again if the put
    /// does not get as far as renaming it.
    fn write_temp(&self, shard: ShardId, bytes: &[u8]) -> Result<TempFile, StoreError> {
        let (temp, mut file) = loop {
            let seq = self.temp_seq.fetch_add(1, Ordering::Relaxed);
            let path = self.tmp_dir.join(format!("{}.{seq}", shard.to_hex()));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => break (TempFile { path, armed: true }, file),
                // Only possible if something else writes into our tmp dir; pick another name.
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(io_at(&path, err)),
            }
        };
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|err| io_at(&temp.path, err))?;
        Ok(temp)
    }

    /// Makes sure the fan-out directory for ids starting with `prefix` exists and its entry in
    /// `shards/` is durable, so a crash cannot lose a directory holding acknowledged shards.
    fn ensure_fanout(&self, prefix: u8) -> Result<(), StoreError> {
        let durable = &self.fanout_durable[usize::from(prefix)];
        if durable.load(Ordering::Acquire) {
            return Ok(());
        }
        let dir = self.fanout_dir(prefix);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(io_at(&dir, err)),
        }
        // Also when another thread created it: that thread may not have synced `shards/` yet,
        // and this put must not be acknowledged before it is.
        sync_dir(&self.shards_dir)?;
        durable.store(true, Ordering::Release);
        Ok(())
    }

    fn fanout_dir(&self, prefix: u8) -> PathBuf {
        self.shards_dir.join(format!("{prefix:02x}"))
    }

    fn shard_path(&self, shard: ShardId) -> PathBuf {
        self.fanout_dir(shard.0[0]).join(shard.to_hex())
    }

    fn stripe(&self, shard: ShardId) -> &RwLock<()> {
        // The first byte picks the fan-out directory; the last ones spread ids over stripes.
        let n = usize::from(u16::from_le_bytes([shard.0[14], shard.0[15]]));
        &self.locks[n % self.locks.len()]
    }

    // The guarded data is `()`, so a panic elsewhere cannot leave it inconsistent: poisoning
    // is ignored.
    fn read_lock(&self, shard: ShardId) -> RwLockReadGuard<'_, ()> {
        self.stripe(shard)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write_lock(&self, shard: ShardId) -> RwLockWriteGuard<'_, ()> {
        self.stripe(shard)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A temp file that deletes itself unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: whatever is left is removed by the next open.
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn read_meta(txn: &ReadTransaction, shard: ShardId) -> Result<Option<ShardMeta>, StoreError> {
    let table = txn.open_table(SHARDS)?;
    let value = table.get(shard.0)?;
    value
        .map(|value| index::decode_meta(shard, value.value()))
        .transpose()
}

fn is_damaged(txn: &ReadTransaction, shard: ShardId) -> Result<bool, StoreError> {
    Ok(txn.open_table(DAMAGED)?.get(shard.0)?.is_some())
}

fn outboard_of(
    shard: ShardId,
    meta: ShardMeta,
    hashes: Vec<u8>,
) -> Result<SliceOutboard, StoreError> {
    SliceOutboard::from_parts(meta.root, meta.size, hashes)
        .map_err(|err| StoreError::Db(format!("corrupt outboard for shard {shard}: {err}")))
}

/// Makes a directory's entries durable (new names, renames into it).
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|err| io_at(dir, err))
}

fn unix_now() -> u64 {
    // A clock before 1970 is a misconfigured host, not a reason to fail a write.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use redb::ReadableTableMetadata;

    use super::*;

    #[test]
    fn serials_are_pruned_an_hour_after_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = ShardStore::open(dir.path(), 1 << 20).unwrap();
        let now = 1_000_000;
        assert!(store.record_serial_at(1, now + 60, true, now).unwrap());
        assert!(store.record_serial_at(2, now - 100, true, now).unwrap());
        assert!(!store.record_serial_at(1, now + 60, true, now).unwrap());
        // Two hours on, serial 2 (expired 100 s before `now`) is past the grace period and
        // forgotten; serial 1 expired 7140 s ago, also forgotten.
        let later = now + 2 * 3600;
        assert!(store.record_serial_at(3, later + 60, false, later).unwrap());
        let txn = store.db.begin_read().unwrap();
        let serials = txn.open_table(SERIALS).unwrap();
        assert!(serials.get(1).unwrap().is_none());
        assert!(serials.get(2).unwrap().is_none());
        assert!(serials.get(3).unwrap().is_some());
        assert_eq!(txn.open_table(SERIAL_EXPIRY).unwrap().len().unwrap(), 1);
    }

    #[test]
    fn serials_within_grace_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = ShardStore::open(dir.path(), 1 << 20).unwrap();
        let now = 1_000_000;
        assert!(store.record_serial_at(7, now - 10, true, now).unwrap());
        // 59 minutes past expiry: still remembered, so still a replay.
        assert!(
            !store
                .record_serial_at(7, now - 10, true, now - 10 + 3540)
                .unwrap()
        );
    }

    #[test]
    fn store_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ShardStore>();
        check::<Reservation>();
    }
}
