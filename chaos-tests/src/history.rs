//! [`History`]: every operation the chaos load sends to the S3 gateways, as it was invoked
//! and as it ended, for the [`checker`](crate::checker).
//!
//! Each operation is recorded twice: when the client invokes it, and when it ends, with one
//! of three outcomes. **Ok**: the gateway acknowledged it (for a read, with the value it
//! returned). **Fail**: the gateway gave a definite refusal (an S3 4xx), so a write that
//! failed must never become visible. **Unknown**: anything else (a timeout, a dropped
//! connection, a 5xx): the write may or may not have taken effect, now or later.
//!
//! Values are self-identifying ([`encode_value`], [`decode_value`]): a header naming the key
//! and the write's id, a payload derived from both, and a BLAKE3 hash of everything before
//! it. Any byte changed, truncated or borrowed from another key or write is detected by
//! decoding alone, without keeping the bodies.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Identifies one write (a PUT or a completed multipart upload) across the whole run.
pub type WriteId = u64;

/// What an operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// PutObject of a whole value.
    Put,
    /// GetObject of a whole value.
    Get,
    /// DeleteObject.
    Delete,
    /// CompleteMultipartUpload of a value uploaded in parts (invoked when the completion is
    /// sent: the value cannot be visible before).
    MultipartComplete,
}

impl OpKind {
    /// Whether the operation writes a value.
    pub fn writes(self) -> bool {
        matches!(self, OpKind::Put | OpKind::MultipartComplete)
    }
}

/// What a read returned, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadValue {
    /// No such key (404 NoSuchKey).
    Absent,
    /// Exactly the value of this write, every byte as written.
    Value(WriteId),
    /// A whole, intact value written to another key.
    Foreign {
        /// The key its header names.
        key: String,
        /// The write its header names.
        write: WriteId,
    },
    /// Bytes that are no value ever encoded: why.
    Corrupt(String),
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged by the gateway.
    Ok,
    /// A definite refusal (S3 4xx): the operation had no effect.
    Fail(String),
    /// Timed out, connection lost, server error: the effect is unknown.
    Unknown(String),
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// Position in the history (unique).
    pub id: usize,
    /// The client (load task) that sent it.
    pub client: usize,
    /// What it did.
    pub kind: OpKind,
    /// The object key.
    pub key: String,
    /// The value written, for writes.
    pub write: Option<WriteId>,
    /// Microseconds since the history began, when the client invoked it.
    pub invoked_us: u64,
    /// When it ended; `None` while running (or if its client never saw an end).
    pub completed_us: Option<u64>,
    /// How it ended; `None` while running.
    pub outcome: Option<Outcome>,
    /// For an acknowledged read, what it returned.
    pub read: Option<ReadValue>,
    /// A read of the final pass, after the faults stopped and the cluster healed.
    pub final_read: bool,
}

impl Op {
    /// Acknowledged by the gateway.
    pub fn acknowledged(&self) -> bool {
        self.outcome == Some(Outcome::Ok)
    }

    /// Definitely refused: it had no effect.
    pub fn failed(&self) -> bool {
        matches!(self.outcome, Some(Outcome::Fail(_)))
    }
}

/// Handle of an invoked operation, to record its end with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invoked(usize);

/// A thread-safe, append-only record of operations.
#[derive(Debug)]
pub struct History {
    start: Instant,
    ops: Mutex<Vec<Op>>,
    next_write: AtomicU64,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
            next_write: AtomicU64::new(1),
        }
    }

    /// A fresh write id, never handed out before in this history.
    pub fn next_write_id(&self) -> WriteId {
        self.next_write.fetch_add(1, Ordering::Relaxed)
    }

    /// Microseconds since the history began (monotonic).
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Op>> {
        // A client task that panicked while holding the lock left a complete Vec behind
        // (every change is one push or one field write).
        self.ops.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Records that `client` invokes `kind` on `key` (writing `write`, for writes).
    pub fn invoke(
        &self,
        client: usize,
        kind: OpKind,
        key: &str,
        write: Option<WriteId>,
    ) -> Invoked {
        self.invoke_op(client, kind, key, write, false)
    }

    /// Records a read of the final pass.
    pub fn invoke_final_read(&self, client: usize, key: &str) -> Invoked {
        self.invoke_op(client, OpKind::Get, key, None, true)
    }

    fn invoke_op(
        &self,
        client: usize,
        kind: OpKind,
        key: &str,
        write: Option<WriteId>,
        final_read: bool,
    ) -> Invoked {
        let mut ops = self.lock();
        // Taken under the lock, so history order is invocation order.
        let invoked_us = self.now_us();
        let id = ops.len();
        ops.push(Op {
            id,
            client,
            kind,
            key: key.to_string(),
            write,
            invoked_us,
            completed_us: None,
            outcome: None,
            read: None,
            final_read,
        });
        Invoked(id)
    }

    fn end(&self, op: Invoked, outcome: Outcome, read: Option<ReadValue>) {
        let mut ops = self.lock();
        let completed_us = self.now_us();
        if let Some(entry) = ops.get_mut(op.0)
            && entry.outcome.is_none()
        {
            entry.completed_us = Some(completed_us);
            entry.outcome = Some(outcome);
            entry.read = read;
        }
    }

    /// The operation was acknowledged (a write or delete).
    pub fn ok(&self, op: Invoked) {
        self.end(op, Outcome::Ok, None);
    }

    /// The read was answered with `value`.
    pub fn ok_read(&self, op: Invoked, value: ReadValue) {
        self.end(op, Outcome::Ok, Some(value));
    }

    /// The operation was definitely refused.
    pub fn fail(&self, op: Invoked, why: impl Into<String>) {
        self.end(op, Outcome::Fail(why.into()), None);
    }

    /// The operation's effect is unknown.
    pub fn unknown(&self, op: Invoked, why: impl Into<String>) {
        self.end(op, Outcome::Unknown(why.into()), None);
    }

    /// A copy of every operation so far.
    pub fn ops(&self) -> Vec<Op> {
        self.lock().clone()
    }

    /// Operations so far that were acknowledged.
    pub fn acknowledged(&self) -> usize {
        self.lock().iter().filter(|op| op.acknowledged()).count()
    }

    /// Operations invoked so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing was invoked yet.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// First bytes of every value, before its write id, length and key.
const MAGIC: &str = "cairn-chaos-v1";
/// Length of the trailing hash.
const HASH_LEN: usize = 32;
/// Longest header [`decode_value`] looks for.
const MAX_HEADER: usize = 1024;

fn header(key: &str, write: WriteId, total: usize) -> String {
    format!("{MAGIC} {write} {total} {key}\n")
}

/// The value of `write` to `key`: about `len` bytes (never fewer than its header and hash
/// need). Deterministic: the same arguments give the same bytes.
pub fn encode_value(key: &str, write: WriteId, len: usize) -> Vec<u8> {
    // The header holds the total length, which depends on the header's own length: find
    // the fixed point (a digit more at most once).
    let mut total = len;
    loop {
        let need = header(key, write, total).len() + HASH_LEN;
        if total >= need {
            break;
        }
        total = need;
    }
    let head = header(key, write, total);
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(head.as_bytes());
    let payload = total - head.len() - HASH_LEN;
    let mut hasher = blake3::Hasher::new();
    hasher.update(MAGIC.as_bytes());
    hasher.update(&write.to_le_bytes());
    hasher.update(key.as_bytes());
    let start = out.len();
    out.resize(start + payload, 0);
    hasher.finalize_xof().fill(&mut out[start..]);
    let hash = blake3::hash(&out);
    out.extend_from_slice(hash.as_bytes());
    out
}

/// Decodes what a read of `key` returned.
pub fn decode_value(key: &str, bytes: &[u8]) -> ReadValue {
    let window = &bytes[..bytes.len().min(MAX_HEADER)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        return ReadValue::Corrupt(format!("{} bytes without a header", bytes.len()));
    };
    let Ok(head) = std::str::from_utf8(&window[..newline]) else {
        return ReadValue::Corrupt("header is not UTF-8".into());
    };
    let mut fields = head.splitn(4, ' ');
    let (Some(MAGIC), Some(write), Some(total), Some(named)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return ReadValue::Corrupt(format!("malformed header {head:?}"));
    };
    let (Ok(write), Ok(total)) = (write.parse::<WriteId>(), total.parse::<usize>()) else {
        return ReadValue::Corrupt(format!("malformed header {head:?}"));
    };
    if total != bytes.len() {
        return ReadValue::Corrupt(format!(
            "write {write} of {named}: {} bytes, its header says {total}",
            bytes.len()
        ));
    }
    let expected = encode_value(named, write, total);
    if expected != bytes {
        let at = expected
            .iter()
            .zip(bytes)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return ReadValue::Corrupt(format!(
            "write {write} of {named}: bytes differ from offset {at}"
        ));
    }
    if named != key {
        return ReadValue::Foreign {
            key: named.to_string(),
            write,
        };
    }
    ReadValue::Value(write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_at_every_size() {
        for len in [0, 1, 40, 100, 4096, 70_000] {
            let value = encode_value("dir/key", 42, len);
            assert!(value.len() >= len);
            assert_eq!(decode_value("dir/key", &value), ReadValue::Value(42));
        }
    }

    #[test]
    fn any_damage_is_corrupt() {
        let value = encode_value("k", 7, 5000);
        for at in [0, 20, 2500, value.len() - 1] {
            let mut bad = value.clone();
            bad[at] ^= 1;
            assert!(
                matches!(decode_value("k", &bad), ReadValue::Corrupt(_)),
                "flip at {at}"
            );
        }
        assert!(matches!(
            decode_value("k", &value[..value.len() - 1]),
            ReadValue::Corrupt(_)
        ));
        let mut longer = value.clone();
        longer.push(0);
        assert!(matches!(decode_value("k", &longer), ReadValue::Corrupt(_)));
        assert!(matches!(decode_value("k", b""), ReadValue::Corrupt(_)));
    }

    #[test]
    fn another_keys_value_is_foreign() {
        let value = encode_value("other", 9, 300);
        assert_eq!(
            decode_value("mine", &value),
            ReadValue::Foreign {
                key: "other".into(),
                write: 9
            }
        );
    }

    #[test]
    fn history_records_invocations_and_ends() {
        let history = History::new();
        let a = history.invoke(0, OpKind::Put, "k", Some(1));
        let b = history.invoke(1, OpKind::Get, "k", None);
        history.ok(a);
        history.ok_read(b, ReadValue::Value(1));
        // A second end is ignored: the first one is what the client saw.
        history.fail(a, "late");
        let ops = history.ops();
        assert_eq!(ops.len(), 2);
        assert!(ops[0].acknowledged());
        assert_eq!(ops[1].read, Some(ReadValue::Value(1)));
        assert!(ops[0].invoked_us <= ops[1].invoked_us);
        assert!(ops[0].completed_us.is_some());
        assert_eq!(history.acknowledged(), 2);
        assert_ne!(history.next_write_id(), history.next_write_id());
    }
}
