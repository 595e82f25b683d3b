//! Whole-cluster tests with faults injected: real processes on separate addresses, killed,
//! paused, partitioned, filled up and made to lie.
//!
//! Built so far: the parts that make a node lie or suffer, and the chaos suite's harness.
//!
//! - [`misbehaviour`]: [`cairn_node::conduct::Conduct`]s for the real node daemon, one per
//!   [`misbehaviour::Misbehaviour`]: dropping shards after signing their receipts (and
//!   still claiming them), flipping bytes in answers, answering audits late, and answering
//!   audits from shards rebuilt out of public objects ([`refetch`]).
//! - [`lossy_link`]: a UDP relay that delays and drops datagrams, in front of a node's QUIC
//!   port.
//! - The `cairn-chaos-node` binary: the real node daemon (same config file, joins with an
//!   invitation, heartbeats, stores shards, signs receipts) with exactly one misbehaviour,
//!   optionally behind a lossy link; other crates' tests start it by path, next to `cairn`.
//! - [`partition`]: a UDP relay in front of a coordinator member's QUIC port that cuts
//!   chosen peers off on demand.
//! - [`cluster`]: a production-shaped cluster of separate `cairn` processes, formed through
//!   the admin API, with the levers to kill, pause, restart, partition and skew its parts.
//! - [`ports`]: loopback ports below the kernel's ephemeral range, for processes restarted
//!   on the same address.
//! - [`history`]: every S3 operation of a chaos run (invoked; ok, failed or unknown; the
//!   value read), and self-identifying values.
//! - [`checker`]: whether a history is one a correct store could have produced: nothing
//!   acknowledged lost, nothing corrupt or never written read, deletes kept.
//! - [`schedule`]: seeded fault schedules, short (every fault once) and long.
//!
//! The tests in `tests/` check each lie and the link against real nodes over real QUIC; the
//! root package's `tests/chaos.rs` runs a schedule against a whole cluster under load.

pub mod checker;
pub mod cluster;
pub mod history;
pub mod lossy_link;
pub mod misbehaviour;
pub mod partition;
pub mod ports;
pub mod refetch;
pub mod schedule;
