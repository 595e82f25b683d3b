//! The coordinator: Cairn's only trusted state, a Raft-replicated catalog and the loops
//! that place, audit, repair and rebalance shards.
//!
//! Built so far, each usable and tested on its own: the [`catalog`] (records, the commands
//! of the Raft log and their deterministic application to redb tables), [`placement`] (which
//! nodes get the shards of a new segment) and [`raft`] (the durable log, the catalog as
//! openraft's state machine with snapshots, and member-to-member RPC over QUIC). The
//! `cairn coordinator` process that serves nodes, gateways and operators on top of them is
//! not built yet.

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
