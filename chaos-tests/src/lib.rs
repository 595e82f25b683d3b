//! Whole-cluster tests with faults injected: real processes on separate addresses, killed,
//! paused, partitioned, filled up and made to lie.
//!
//! Built so far: the parts that make a node lie or suffer.
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
//!
//! The tests in `tests/` check each lie and the link against real nodes over real QUIC.

pub mod lossy_link;
pub mod misbehaviour;
pub mod refetch;
