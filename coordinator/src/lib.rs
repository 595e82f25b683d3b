//! The coordinator: Cairn's only trusted state, a Raft-replicated catalog and the loops
//! that place, audit, repair and rebalance shards.
//!
//! The [`catalog`] holds the records, the commands of the Raft log and their deterministic
//! application to redb tables; [`raft`] the durable log, the catalog as openraft's state
//! machine with snapshots, and member-to-member RPC over QUIC; [`placement`] chooses nodes
//! for new segments. [`daemon`] runs the `cairn coordinator` process on top of them: the
//! gateway RPC ([`rpc`]), node joins and heartbeats, the [`admin`] API and status page, and
//! the leader's loops ([`failure`], [`audit`], [`repair`], [`gc`]). Gateways reach it
//! through `cairn_client`, whose wire records [`rpc`] converts to and from the catalog's.

pub mod admin;
pub mod audit;
pub mod catalog;
pub mod config;
pub mod daemon;
pub mod durability;
pub mod failure;
pub mod gc;
pub mod liveness;
pub mod node_clients;
mod node_rpc;
pub mod placement;
pub mod raft;
pub mod repair;
pub mod rpc;
