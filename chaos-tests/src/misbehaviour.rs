//! The ways a chaos node lies: [`cairn_node::conduct::Conduct`]s for the real node daemon,
//! one per [`Misbehaviour`].

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_erasure::ShardRoot;
use cairn_node::conduct::{Answer, BoxFuture, Conduct, Honest};
use cairn_proto::ids::ShardId;
use cairn_proto::wire::ErrorCode;

use crate::refetch::PublicObjects;

/// One way to misbehave, as chosen on the chaos node's command line.
#[derive(Debug, Clone)]
pub enum Misbehaviour {
    /// No lie at all (with a lossy link: an honest node on a bad uplink).
    Honest,
    /// Store the shard, sign the receipt, delete the bytes and keep claiming them.
    DropAfterReceipt,
    /// Like [`Misbehaviour::DropAfterReceipt`] for the shards [`drops_shard`] picks with
    /// this probability (0 to 1), and honest with the rest: a node that loses a share of
    /// what it stores.
    DropShare(f64),
    /// Serve GETs and audits with one shard byte flipped.
    FlipBytes,
    /// Answer every audit this much later than it could.
    LateAudits(Duration),
    /// Drop shards after their receipts, and answer audits by rebuilding shards from the
    /// public objects.
    RefetchAudits(Arc<PublicObjects>),
    /// Drop shards after their receipts, keep claiming them, and refuse every GET and
    /// audit with this code.
    Refuses(ErrorCode),
    /// Keep every shard and answer audits honestly, but refuse every read (`GetShard`)
    /// with this code: a node that proves storage and serves nobody.
    RefusesReads(ErrorCode),
}

impl Misbehaviour {
    /// The conduct that behaves this way.
    pub fn conduct(&self) -> Arc<dyn Conduct> {
        match self {
            Misbehaviour::Honest => Arc::new(Honest),
            Misbehaviour::DropAfterReceipt => Arc::new(DropAfterReceipt::default()),
            Misbehaviour::DropShare(share) => Arc::new(DropShare::new(*share)),
            Misbehaviour::FlipBytes => Arc::new(FlipBytes),
            Misbehaviour::LateAudits(delay) => Arc::new(LateAudits(*delay)),
            Misbehaviour::RefetchAudits(objects) => Arc::new(RefetchAudits {
                dropped: DropAfterReceipt::default(),
                objects: objects.clone(),
            }),
            Misbehaviour::Refuses(code) => Arc::new(Refuses {
                dropped: DropAfterReceipt::default(),
                code: *code,
            }),
            Misbehaviour::RefusesReads(code) => Arc::new(RefusesReads(*code)),
        }
    }

    /// One line saying what the node does wrong.
    pub fn describe(&self) -> String {
        self.conduct().describe()
    }
}

/// Drops every shard right after signing its receipt and keeps claiming it in inventories
/// (and, when told to delete it, says it existed). Claims live in memory: a restarted node
/// forgets them, and its inventory then tells the truth.
#[derive(Debug, Default)]
pub struct DropAfterReceipt {
    claims: Mutex<BTreeSet<ShardId>>,
}

impl DropAfterReceipt {
    fn claims(&self) -> std::sync::MutexGuard<'_, BTreeSet<ShardId>> {
        // The set stays consistent whatever panicked while holding it.
        self.claims
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl Conduct for DropAfterReceipt {
    fn drop_after_receipt(&self, shard: ShardId, _root: ShardRoot, _size: u64) -> bool {
        self.claims().insert(shard);
        true
    }

    fn claimed_shards(&self) -> Vec<ShardId> {
        self.claims().iter().copied().collect()
    }

    fn release_claim(&self, shard: ShardId) -> bool {
        self.claims().remove(&shard)
    }

    fn describe(&self) -> String {
        "drop-after-receipt: stores each shard, signs its receipt, deletes the bytes and keeps \
         claiming them"
            .into()
    }
}

/// The key of the hash that decides which shards a [`DropShare`] node drops.
const DROP_SHARE_CONTEXT: &str = "cairn-chaos 2026-12 drop-share shard pick v1";

/// Whether a node dropping `share` (0 to 1) of its shards drops `shard`: a keyed hash of
/// the id, read as a fraction of 2⁶⁴, falls below `share`. The pick depends on the id
/// alone, so a test that sees the catalog's shard ids knows exactly which ones a
/// [`DropShare`] node lost; ids are random, so about `share` of them are picked.
pub fn drops_shard(shard: &ShardId, share: f64) -> bool {
    if share >= 1.0 {
        return true;
    }
    let hash = blake3::derive_key(DROP_SHARE_CONTEXT, &shard.0);
    let mut head = [0u8; 8];
    head.copy_from_slice(&hash[..8]);
    // 2⁶⁴ · share, exact enough: f64 keeps 53 bits, far more than a test's share needs.
    let below = share.max(0.0) * 18_446_744_073_709_551_616.0;
    (u64::from_le_bytes(head) as f64) < below
}

/// Drops the shards [`drops_shard`] picks right after signing their receipts, keeps
/// claiming them (and answers for them as [`DropAfterReceipt`] does: not found on GETs and
/// audits), and stores and serves every other shard honestly.
#[derive(Debug)]
pub struct DropShare {
    share: f64,
    dropped: DropAfterReceipt,
}

impl DropShare {
    /// A node that drops `share` (0 to 1) of the shards it stores.
    pub fn new(share: f64) -> Self {
        Self {
            share,
            dropped: DropAfterReceipt::default(),
        }
    }
}

impl Conduct for DropShare {
    fn drop_after_receipt(&self, shard: ShardId, root: ShardRoot, size: u64) -> bool {
        drops_shard(&shard, self.share) && self.dropped.drop_after_receipt(shard, root, size)
    }

    fn claimed_shards(&self) -> Vec<ShardId> {
        self.dropped.claimed_shards()
    }

    fn release_claim(&self, shard: ShardId) -> bool {
        self.dropped.release_claim(shard)
    }

    fn describe(&self) -> String {
        format!(
            "drop-share: drops {} % of its shards after signing their receipts, keeps claiming \
             them, and serves the rest honestly",
            self.share * 100.0
        )
    }
}

/// Flips one shard byte in every GET and audit answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlipBytes;

impl Conduct for FlipBytes {
    fn tamper(&self, _answer: Answer, _shard: ShardId, proof: &mut [u8]) {
        // A slice proof lists each parent hash before its children, so it always ends in
        // shard bytes: the last byte is data, never a hash.
        if let Some(last) = proof.last_mut() {
            *last ^= 0x01;
        }
    }

    fn describe(&self) -> String {
        "flip-bytes: serves GETs and audits with one shard byte flipped".into()
    }
}

/// Answers every audit this much later than it could.
#[derive(Debug, Clone, Copy)]
pub struct LateAudits(pub Duration);

impl Conduct for LateAudits {
    fn delay_audit(&self, _shard: ShardId) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(self.0))
    }

    fn describe(&self) -> String {
        format!(
            "late-audits: answers every audit {} ms late",
            self.0.as_millis()
        )
    }
}

/// Keeps nothing, and answers audits from shards rebuilt out of the public objects.
pub struct RefetchAudits {
    dropped: DropAfterReceipt,
    objects: Arc<PublicObjects>,
}

impl Conduct for RefetchAudits {
    fn drop_after_receipt(&self, shard: ShardId, root: ShardRoot, size: u64) -> bool {
        self.dropped.drop_after_receipt(shard, root, size)
    }

    fn claimed_shards(&self) -> Vec<ShardId> {
        self.dropped.claimed_shards()
    }

    fn release_claim(&self, shard: ShardId) -> bool {
        self.dropped.release_claim(shard)
    }

    fn audit_bytes(
        &self,
        shard: ShardId,
        root: ShardRoot,
        size: u64,
    ) -> BoxFuture<'_, Option<Vec<u8>>> {
        Box::pin(async move { self.objects.shard_for(shard, root, size).await })
    }

    fn describe(&self) -> String {
        format!(
            "refetch-audits: drops shards after their receipts and answers audits by rebuilding \
             them from {} public object(s) with k={}, m={}, segments of {} bytes",
            self.objects.urls().len(),
            self.objects.codec().data_shards(),
            self.objects.codec().parity_shards(),
            self.objects.segment_size()
        )
    }
}

/// Keeps nothing, claims everything, and refuses every read and audit with one code: a
/// node hoping a refusal is never held against it.
pub struct Refuses {
    dropped: DropAfterReceipt,
    code: ErrorCode,
}

impl Conduct for Refuses {
    fn drop_after_receipt(&self, shard: ShardId, root: ShardRoot, size: u64) -> bool {
        self.dropped.drop_after_receipt(shard, root, size)
    }

    fn claimed_shards(&self) -> Vec<ShardId> {
        self.dropped.claimed_shards()
    }

    fn release_claim(&self, shard: ShardId) -> bool {
        self.dropped.release_claim(shard)
    }

    fn refuse(&self, _answer: Answer, _shard: ShardId) -> Option<ErrorCode> {
        Some(self.code)
    }

    fn describe(&self) -> String {
        format!(
            "refuses: drops shards after their receipts, keeps claiming them and refuses every \
             GET and audit as `{}`",
            self.code
        )
    }
}

/// Keeps every shard and answers every audit, but refuses every read with one code: a node
/// whose storage proves out while no reader gets a byte from it.
pub struct RefusesReads(ErrorCode);

impl Conduct for RefusesReads {
    fn refuse(&self, answer: Answer, _shard: ShardId) -> Option<ErrorCode> {
        (answer == Answer::Get).then_some(self.0)
    }

    fn describe(&self) -> String {
        format!(
            "refuses reads: keeps every shard and answers audits, but refuses every GET as `{}`",
            self.0
        )
    }
}
