//! The shard store against real files in temp directories: round trips, refusals, damage,
//! crash leftovers (simulated and with `kill -9`), replay protection and quota under
//! concurrency.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use cairn_erasure::ShardRoot;
use cairn_erasure::slice::SliceProof;
use cairn_node::store::{ShardMeta, ShardStore, StoreError};
use cairn_proto::ids::ShardId;

const MIB: u64 = 1 << 20;

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An id spread over the fan-out directories.
fn id(n: u64) -> ShardId {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    ShardId(bytes)
}

fn put(store: &ShardStore, shard: ShardId, bytes: &[u8]) -> Result<ShardMeta, StoreError> {
    let reservation = store.reserve(bytes.len() as u64)?;
    store.put(reservation, shard, ShardRoot::of(bytes), bytes)
}

fn shard_path(dir: &Path, shard: ShardId) -> PathBuf {
    let hex = shard.to_hex();
    dir.join("shards").join(&hex[..2]).join(hex)
}

/// Every non-directory entry under `root`, recursively.
fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

/// Proves `range` of `shard` and checks the proof the way a client would.
fn prove_and_check(store: &ShardStore, shard: ShardId, bytes: &[u8], range: std::ops::Range<u64>) {
    let proof = store.prove(shard, range.clone()).unwrap();
    let got = SliceProof::from_bytes(proof)
        .verify(&ShardRoot::of(bytes), bytes.len() as u64, range.clone())
        .unwrap();
    assert_eq!(got, &bytes[range.start as usize..range.end as usize]);
}

#[test]
fn round_trip_of_empty_tiny_and_large_shards_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let shards = [
        (id(1), Vec::new()),
        (id(2), vec![0x5a]),
        (id(3), data(16 * MIB as usize, 3)),
    ];
    let total: u64 = shards.iter().map(|(_, b)| b.len() as u64).sum();

    let check = |store: &ShardStore| {
        for (shard, bytes) in &shards {
            let size = bytes.len() as u64;
            let meta = store.meta(*shard).unwrap().unwrap();
            assert_eq!(meta.root, ShardRoot::of(bytes));
            assert_eq!(meta.size, size);
            assert_eq!(
                fs::metadata(shard_path(dir.path(), *shard)).unwrap().len(),
                size
            );
            assert!(store.verify(*shard).unwrap());
            if size == 0 {
                assert_eq!(store.prove(*shard, 0..0).unwrap(), Vec::<u8>::new());
                assert!(matches!(
                    store.prove(*shard, 0..1),
                    Err(StoreError::BadRange { size: 0, .. })
                ));
                continue;
            }
            prove_and_check(store, *shard, bytes, 0..size);
            if size > 1 {
                // Inside one chunk group, and across several group boundaries.
                prove_and_check(store, *shard, bytes, size / 2..size / 2 + 100);
                prove_and_check(store, *shard, bytes, 5_000_001..5_100_003);
            }
            assert!(matches!(
                store.prove(*shard, 0..size + 1),
                Err(StoreError::BadRange { .. })
            ));
            assert!(matches!(
                store.prove(*shard, 1..1),
                Err(StoreError::BadRange { .. })
            ));
        }
        assert_eq!(store.used(), total);
        assert_eq!(store.shard_count(), 3);
        assert!(store.damaged().unwrap().is_empty());
    };

    {
        let (store, report) = ShardStore::open(dir.path(), 64 * MIB).unwrap();
        assert_eq!(report.shards, 0);
        for (shard, bytes) in &shards {
            let meta = put(&store, *shard, bytes).unwrap();
            assert_eq!(meta.size, bytes.len() as u64);
        }
        check(&store);
        assert!(matches!(
            store.prove(id(99), 0..1),
            Err(StoreError::NotFound(s)) if s == id(99)
        ));
    }
    let (store, report) = ShardStore::open(dir.path(), 64 * MIB).unwrap();
    assert_eq!(report.shards, 3);
    assert_eq!(report.bytes, total);
    assert_eq!(report.removed_temp_files + report.removed_orphan_files, 0);
    assert!(report.dropped_index_entries.is_empty());
    check(&store);
}

#[test]
fn refusals_leave_nothing_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = ShardStore::open(dir.path(), MIB).unwrap();
    let bytes = data(1000, 1);
    let shards_dir = dir.path().join("shards");

    let reservation = store.reserve(1000).unwrap();
    let err = store
        .put(reservation, id(1), ShardRoot::of(b"something else"), &bytes)
        .unwrap_err();
    assert!(matches!(err, StoreError::RootMismatch { expected, actual }
            if expected == ShardRoot::of(b"something else") && actual == ShardRoot::of(&bytes)));

    let reservation = store.reserve(999).unwrap();
    let err = store
        .put(reservation, id(1), ShardRoot::of(&bytes), &bytes)
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::SizeMismatch {
            expected: 999,
            actual: 1000
        }
    ));

    let err = store.reserve(MIB + 1).unwrap_err();
    assert!(matches!(
        err,
        StoreError::OverQuota {
            needed,
            free
        } if needed == MIB + 1 && free == MIB
    ));

    assert_eq!(files_under(&shards_dir), Vec::<PathBuf>::new());
    assert_eq!(store.used(), 0);
    assert_eq!(store.shard_count(), 0);
    assert_eq!(store.meta(id(1)).unwrap(), None);
    // Every refused reservation was given back.
    drop(store.reserve(MIB).unwrap());

    // Quota counts stored bytes too.
    put(&store, id(2), &data(MIB as usize - 10, 2)).unwrap();
    let held = store.reserve(10).unwrap();
    assert!(matches!(
        store.reserve(1),
        Err(StoreError::OverQuota { needed: 1, free: 0 })
    ));
    drop(held);
    assert!(store.reserve(10).is_ok());
    assert!(matches!(
        put(&store, id(3), &data(11, 3)),
        Err(StoreError::OverQuota {
            needed: 11,
            free: 10
        })
    ));
    assert_eq!(
        files_under(&shards_dir),
        vec![shard_path(dir.path(), id(2))]
    );
    assert_eq!(store.used(), MIB - 10);
}

#[test]
fn same_root_is_idempotent_and_different_root_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = ShardStore::open(dir.path(), 10 * MIB).unwrap();
    let bytes = data(300_000, 7);
    let first = put(&store, id(1), &bytes).unwrap();
    let inode = fs::metadata(shard_path(dir.path(), id(1))).unwrap().ino();

    let again = put(&store, id(1), &bytes).unwrap();
    assert_eq!(again, first);
    assert_eq!(store.used(), 300_000);
    assert_eq!(store.shard_count(), 1);
    // Not rewritten: a rewrite renames a new file over the old one.
    assert_eq!(
        fs::metadata(shard_path(dir.path(), id(1))).unwrap().ino(),
        inode
    );

    let other = data(300_000, 8);
    assert!(matches!(
        put(&store, id(1), &other),
        Err(StoreError::Conflict(s)) if s == id(1)
    ));
    assert_eq!(fs::read(shard_path(dir.path(), id(1))).unwrap(), bytes);
    assert_eq!(store.meta(id(1)).unwrap(), Some(first));
    assert!(store.verify(id(1)).unwrap());
    assert_eq!(store.used(), 300_000);
    // The reservation of the refused put was released.
    assert!(store.reserve(10 * MIB - 300_000).is_ok());
}

#[test]
fn flipped_byte_is_caught_and_a_re_put_repairs_it() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(MIB as usize, 11);
    let flipped_at = 600_000u64;
    {
        let (store, _) = ShardStore::open(dir.path(), 10 * MIB).unwrap();
        put(&store, id(1), &bytes).unwrap();
        put(&store, id(2), &data(1000, 12)).unwrap();

        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(shard_path(dir.path(), id(1)))
            .unwrap();
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, flipped_at).unwrap();
        file.write_all_at(&[byte[0] ^ 0x01], flipped_at).unwrap();

        assert!(!store.verify(id(1)).unwrap());
        assert!(store.verify(id(2)).unwrap());
        assert_eq!(store.damaged().unwrap(), vec![id(1)]);
        assert!(matches!(
            store.prove(id(1), flipped_at - 10..flipped_at + 10),
            Err(StoreError::Damaged(s)) if s == id(1)
        ));
        // Chunk groups away from the flip still prove, so healthy ranges stay servable.
        prove_and_check(&store, id(1), &bytes, 0..1000);
    }
    // The mark is durable.
    let (store, report) = ShardStore::open(dir.path(), 10 * MIB).unwrap();
    assert_eq!(report.shards, 2);
    assert_eq!(store.damaged().unwrap(), vec![id(1)]);
    assert!(matches!(
        store.prove(id(1), 0..MIB),
        Err(StoreError::Damaged(_))
    ));

    // The coordinator repairs by sending the shard again: it replaces the bad copy.
    put(&store, id(1), &bytes).unwrap();
    assert!(store.damaged().unwrap().is_empty());
    assert!(store.verify(id(1)).unwrap());
    prove_and_check(&store, id(1), &bytes, flipped_at - 10..flipped_at + 10);
    assert_eq!(store.used(), MIB + 1000);
    assert_eq!(store.shard_count(), 2);
}

#[test]
fn damaged_mark_clears_when_the_file_is_good_again() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = ShardStore::open(dir.path(), 10 * MIB).unwrap();
    let bytes = data(50_000, 5);
    put(&store, id(1), &bytes).unwrap();
    let path = shard_path(dir.path(), id(1));
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[!bytes[0]], 0).unwrap();
    assert!(!store.verify(id(1)).unwrap());
    file.write_all_at(&bytes[..1], 0).unwrap();
    assert!(store.verify(id(1)).unwrap());
    assert!(store.damaged().unwrap().is_empty());
    assert!(matches!(store.verify(id(2)), Err(StoreError::NotFound(_))));
}

#[test]
fn reopen_cleans_up_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let kept = data(20_000, 1);
    {
        let (store, _) = ShardStore::open(dir.path(), 10 * MIB).unwrap();
        put(&store, id(1), &kept).unwrap();
        put(&store, id(2), &data(30_000, 2)).unwrap();
        put(&store, id(3), &data(40_000, 3)).unwrap();
        put(&store, id(4), &[]).unwrap();
    }
    let shards = dir.path().join("shards");
    // A put killed before its rename.
    fs::write(shards.join("tmp").join("0123.7"), b"half a shard").unwrap();
    // A put killed between rename and commit (or a delete between commit and unlink).
    let orphan = shard_path(dir.path(), id(50));
    fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    fs::write(&orphan, b"not indexed").unwrap();
    // Names the store never writes.
    let bad_name = shard_path(dir.path(), id(1)).with_file_name("NOT-AN-ID");
    fs::write(&bad_name, b"junk").unwrap();
    // A shard's file lost, and another truncated.
    fs::remove_file(shard_path(dir.path(), id(2))).unwrap();
    OpenOptions::new()
        .write(true)
        .open(shard_path(dir.path(), id(3)))
        .unwrap()
        .set_len(100)
        .unwrap();

    let (store, report) = ShardStore::open(dir.path(), 10 * MIB).unwrap();
    assert_eq!(report.removed_temp_files, 1);
    assert_eq!(report.removed_orphan_files, 2);
    let mut expected_dropped = vec![id(2), id(3)];
    expected_dropped.sort();
    assert_eq!(report.dropped_index_entries, expected_dropped);
    assert_eq!(report.shards, 2);
    assert_eq!(report.bytes, 20_000);
    assert_eq!(store.used(), 20_000);
    assert_eq!(store.shard_count(), 2);

    let mut expected_files = vec![shard_path(dir.path(), id(1)), shard_path(dir.path(), id(4))];
    expected_files.sort();
    assert_eq!(files_under(&shards), expected_files);
    let mut expected_ids = vec![id(1), id(4)];
    expected_ids.sort();
    assert_eq!(store.inventory().unwrap(), expected_ids);
    assert_eq!(store.meta(id(2)).unwrap(), None);
    assert!(matches!(
        store.prove(id(3), 0..1),
        Err(StoreError::NotFound(_))
    ));
    prove_and_check(&store, id(1), &kept, 0..20_000);

    // A dropped id can be stored again.
    let fresh = data(30_000, 22);
    put(&store, id(2), &fresh).unwrap();
    prove_and_check(&store, id(2), &fresh, 100..200);

    // A second open finds nothing more to do.
    drop(store);
    let (_, report) = ShardStore::open(dir.path(), 10 * MIB).unwrap();
    assert_eq!(report.removed_temp_files + report.removed_orphan_files, 0);
    assert!(report.dropped_index_entries.is_empty());
    assert_eq!(report.shards, 3);
}

#[test]
fn lost_index_refuses_to_open_instead_of_deleting_every_shard() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = ShardStore::open(dir.path(), MIB).unwrap();
        put(&store, id(1), &data(100, 1)).unwrap();
    }
    fs::remove_file(dir.path().join("index.redb")).unwrap();
    let err = ShardStore::open(dir.path(), MIB).unwrap_err();
    assert!(
        matches!(&err, StoreError::Db(msg) if msg.contains("index.redb is missing")),
        "{err}"
    );
    assert_eq!(
        fs::read(shard_path(dir.path(), id(1))).unwrap(),
        data(100, 1)
    );
}

#[test]
fn corrupt_index_value_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = ShardStore::open(dir.path(), MIB).unwrap();
        put(&store, id(1), &data(100, 1)).unwrap();
    }
    {
        let db = redb::Database::create(dir.path().join("index.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        let table: redb::TableDefinition<[u8; 16], &[u8]> = redb::TableDefinition::new("shards");
        txn.open_table(table)
            .unwrap()
            .insert(id(1).0, &[0xff_u8; 3][..])
            .unwrap();
        txn.commit().unwrap();
    }
    let err = ShardStore::open(dir.path(), MIB).unwrap_err();
    assert!(
        matches!(&err, StoreError::Db(msg) if msg.contains(&id(1).to_hex())),
        "{err}"
    );
}

#[test]
fn delete_inventory_and_scrub_batches() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<ShardId> = (0..10).map(id).collect();
    {
        let (store, _) = ShardStore::open(dir.path(), 10 * MIB).unwrap();
        for (n, shard) in ids.iter().enumerate() {
            put(&store, *shard, &data(1000 + n, n as u64)).unwrap();
        }
        for gone in [ids[0], ids[4], ids[9]] {
            assert!(store.delete(gone).unwrap());
            assert!(!shard_path(dir.path(), gone).exists());
            assert!(!store.delete(gone).unwrap());
        }
        assert_eq!(store.shard_count(), 7);
    }
    let (store, report) = ShardStore::open(dir.path(), 10 * MIB).unwrap();
    assert_eq!(report.shards, 7);
    let remaining: BTreeSet<ShardId> = ids
        .iter()
        .enumerate()
        .filter(|(n, _)| ![0, 4, 9].contains(n))
        .map(|(_, s)| *s)
        .collect();
    let expected_bytes: u64 = ids
        .iter()
        .enumerate()
        .filter(|(n, _)| ![0, 4, 9].contains(n))
        .map(|(n, _)| 1000 + n as u64)
        .sum();
    assert_eq!(store.used(), expected_bytes);
    let inventory = store.inventory().unwrap();
    assert_eq!(inventory, remaining.iter().copied().collect::<Vec<_>>());
    assert_eq!(store.meta(ids[4]).unwrap(), None);
    assert!(matches!(
        store.prove(ids[4], 0..1),
        Err(StoreError::NotFound(_))
    ));

    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let batch = store.scrub_batch(after, 3).unwrap();
        assert!(batch.len() <= 3);
        let Some(last) = batch.last() else { break };
        after = Some(last.0);
        for (shard, size) in batch {
            assert_eq!(store.meta(shard).unwrap().unwrap().size, size);
            paged.push(shard);
        }
    }
    assert_eq!(paged, inventory);
    assert!(
        store
            .scrub_batch(Some(inventory[6]), 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.scrub_batch(Some(inventory[2]), 2).unwrap().len(), 2);
    assert_eq!(
        store.scrub_batch(Some(inventory[2]), 2).unwrap()[0].0,
        inventory[3]
    );
}

#[test]
fn serials_detect_replays_and_survive_reopen_when_durable() {
    let dir = tempfile::tempdir().unwrap();
    let far = 4_000_000_000;
    {
        let (store, _) = ShardStore::open(dir.path(), MIB).unwrap();
        assert!(store.record_serial(1, far, true).unwrap());
        assert!(!store.record_serial(1, far, true).unwrap());
        assert!(store.record_serial(2, far, false).unwrap());
        assert!(!store.record_serial(2, far, false).unwrap());
        assert!(!store.record_serial(2, far, true).unwrap());
        assert!(store.record_serial(3, far, true).unwrap());
    }
    let (store, _) = ShardStore::open(dir.path(), MIB).unwrap();
    assert!(!store.record_serial(1, far, true).unwrap());
    // Serial 2 was committed without fsync but followed by a durable commit, which carries it.
    assert!(!store.record_serial(2, far, false).unwrap());
    assert!(!store.record_serial(3, far, false).unwrap());
    assert!(store.record_serial(4, far, false).unwrap());
}

#[test]
fn concurrent_reservations_never_exceed_capacity() {
    const CAPACITY: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = ShardStore::open(dir.path(), CAPACITY).unwrap();
    let store = Arc::new(store);

    // Phase 1: every thread grabs all it can and holds it.
    let held: Vec<Vec<_>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..8u64)
            .map(|t| {
                let store = &store;
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    let mut failures = 0;
                    let mut seed = t + 1;
                    // The length cap keeps a quota that never refuses from looping forever.
                    while failures < 200 && mine.len() < 10_000 {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                        match store.reserve(1 + (seed >> 33) % 3000) {
                            Ok(r) => mine.push(r),
                            Err(StoreError::OverQuota { .. }) => failures += 1,
                            Err(other) => panic!("unexpected error {other}"),
                        }
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total: u64 = held.iter().flatten().map(|r| r.size()).sum();
    assert!(total <= CAPACITY, "reserved {total} of {CAPACITY}");
    // The quota was really used up, not refused early.
    assert!(total > CAPACITY - 3000, "only reserved {total}");
    drop(held);
    drop(store.reserve(CAPACITY).unwrap());

    // Phase 2: concurrent puts of real shards.
    let stored = AtomicU64::new(0);
    thread::scope(|scope| {
        for t in 0..8u64 {
            let store = &store;
            let stored = &stored;
            scope.spawn(move || {
                for n in 0..30u64 {
                    let bytes = data(500 + ((t * 31 + n * 17) % 1500) as usize, t * 100 + n);
                    match put(store, id(t * 1000 + n), &bytes) {
                        Ok(_) => {
                            stored.fetch_add(bytes.len() as u64, Ordering::SeqCst);
                        }
                        Err(StoreError::OverQuota { .. }) => {}
                        Err(other) => panic!("unexpected error {other}"),
                    }
                    assert!(store.used() <= CAPACITY);
                }
            });
        }
    });
    let stored = stored.into_inner();
    assert_eq!(store.used(), stored);
    assert!(stored <= CAPACITY);
    let on_disk: u64 = files_under(&dir.path().join("shards"))
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(on_disk, stored);
    assert!(store.reserve(CAPACITY - stored).is_ok());
    assert!(store.reserve(CAPACITY - stored + 1).is_err());
}

/// Environment variable telling [`kill9_child`] where its store is.
const CHILD_DIR: &str = "CAIRN_STORE_KILL9_DIR";

/// Not a test on its own: the worker that `kill_9_at_random_points_loses_nothing_acknowledged`
/// runs in a child process and kills. It puts and deletes shards forever, announcing each
/// operation before starting it and acknowledging it once the store has returned.
#[test]
#[ignore = "run as a child process by kill_9_at_random_points_loses_nothing_acknowledged"]
fn kill9_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let round: u64 = std::env::var("CAIRN_STORE_KILL9_ROUND")
        .unwrap()
        .parse()
        .unwrap();
    let (store, _) = ShardStore::open(Path::new(&dir), u64::MAX).unwrap();
    let mut out = std::io::stdout().lock();
    let mut say = |line: String| {
        out.write_all(line.as_bytes()).unwrap();
        out.flush().unwrap();
    };
    for n in 0.. {
        let key = round * 1_000_000 + n;
        let size = (key * 7919 % 300_000) as usize;
        let bytes = data(size, key);
        say(format!("@@BEGIN PUT {key}\n"));
        put(&store, id(key), &bytes).unwrap();
        say(format!("@@PUT {key}\n"));
        if n % 3 == 2 {
            let old = key - 2;
            say(format!("@@BEGIN DEL {old}\n"));
            assert!(store.delete(id(old)).unwrap());
            say(format!("@@DEL {old}\n"));
        }
    }
}

/// What the parent has learnt from the child's output.
#[derive(Default)]
struct Acks {
    /// Keys whose put was acknowledged and whose delete was not.
    live: BTreeSet<u64>,
    /// Keys whose delete was acknowledged.
    deleted: BTreeSet<u64>,
    /// The operation started and not acknowledged: (is a put, key).
    in_flight: Option<(bool, u64)>,
}

impl Acks {
    /// Applies one line of the child's output; returns whether it acknowledged a put. A line
    /// without its newline was cut off by the kill and says nothing.
    fn apply(&mut self, line: &str) -> bool {
        // The test harness prints lines of its own.
        let Some(line) = line.strip_suffix('\n').filter(|l| l.starts_with("@@")) else {
            return false;
        };
        let Some((what, key)) = line.rsplit_once(' ') else {
            return false;
        };
        let key: u64 = key.parse().unwrap();
        match what {
            "@@BEGIN PUT" => self.in_flight = Some((true, key)),
            "@@BEGIN DEL" => self.in_flight = Some((false, key)),
            "@@PUT" => {
                self.in_flight = None;
                self.live.insert(key);
                return true;
            }
            "@@DEL" => {
                self.in_flight = None;
                self.live.remove(&key);
                self.deleted.insert(key);
            }
            _ => {}
        }
        false
    }
}

#[test]
fn kill_9_at_random_points_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acks = Acks::default();
    // Kill points after every residue mod 3, so the kill lands in puts and in deletes.
    for (round, kill_after) in [3u64, 8, 13, 21, 30, 34, 45, 52].into_iter().enumerate() {
        let mut child = Command::new(&exe)
            .args(["kill9_child", "--exact", "--ignored", "--nocapture"])
            .env(CHILD_DIR, dir.path())
            .env("CAIRN_STORE_KILL9_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let mut puts = 0;
        while puts < kill_after {
            line.clear();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "child exited early"
            );
            puts += u64::from(acks.apply(&line));
        }
        // SIGKILL, somewhere in whatever the child is doing by now; the varying pause moves
        // the kill around within puts and deletes.
        thread::sleep(std::time::Duration::from_micros(round as u64 * 397 % 3000));
        child.kill().unwrap();
        child.wait().unwrap();
        // The child may have run ahead of this reader: what it acknowledged before dying
        // still counts.
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            acks.apply(&line);
        }

        let (store, report) = ShardStore::open(dir.path(), u64::MAX).unwrap();
        assert!(report.dropped_index_entries.is_empty(), "{report:?}");
        let inventory: BTreeSet<u64> = store
            .inventory()
            .unwrap()
            .into_iter()
            .map(|s| {
                let mut n = [0u8; 8];
                n.copy_from_slice(&s.0[8..]);
                u64::from_be_bytes(n)
            })
            .collect();
        // Only the operation in flight at the kill may have gone either way.
        for key in &acks.live {
            assert!(
                inventory.contains(key) || acks.in_flight == Some((false, *key)),
                "acknowledged put {key} lost"
            );
        }
        for key in &inventory {
            assert!(
                acks.live.contains(key) || acks.in_flight == Some((true, *key)),
                "shard {key} stored but never acknowledged or in flight"
            );
        }
        for key in &acks.deleted {
            assert!(!inventory.contains(key), "acknowledged delete {key} undone");
        }
        for key in &inventory {
            assert!(store.verify(id(*key)).unwrap(), "shard {key} damaged");
            let size = (key * 7919 % 300_000) as usize;
            assert_eq!(
                store.meta(id(*key)).unwrap().unwrap().root,
                ShardRoot::of(&data(size, *key))
            );
        }
        let files: BTreeSet<PathBuf> = files_under(&dir.path().join("shards"))
            .into_iter()
            .collect();
        let expected: BTreeSet<PathBuf> = inventory
            .iter()
            .map(|key| shard_path(dir.path(), id(*key)))
            .collect();
        assert_eq!(files, expected);
        let bytes: u64 = inventory
            .iter()
            .map(|key| store.meta(id(*key)).unwrap().unwrap().size)
            .sum();
        assert_eq!(store.used(), bytes);
        // Whatever was in flight is settled now, one way or the other.
        acks.live = inventory;
        acks.in_flight = None;
    }
}

/// The inventory lists only shards the node can serve: a shard whose file vanished under a
/// running store (a wiped disk) or that failed verification is left out, so the
/// coordinator sees it missing and rebuilds it elsewhere.
#[test]
fn inventory_leaves_out_vanished_and_damaged_shards() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = ShardStore::open(dir.path(), 10 * MIB).unwrap();
    let ids: Vec<ShardId> = (0..4).map(id).collect();
    for (n, shard) in ids.iter().enumerate() {
        put(&store, *shard, &data(4096, n as u64)).unwrap();
    }
    fs::remove_file(shard_path(dir.path(), ids[1])).unwrap();
    // Flip a byte of another: the verification marks it damaged.
    let path = shard_path(dir.path(), ids[2]);
    let mut bytes = fs::read(&path).unwrap();
    bytes[100] ^= 1;
    fs::write(&path, bytes).unwrap();
    assert!(!store.verify(ids[2]).unwrap());
    assert_eq!(store.inventory().unwrap(), vec![ids[0], ids[3]]);
}
