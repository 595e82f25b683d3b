//! The storage node: the daemon a volunteer runs to offer disk to a Cairn cluster.
//!
//! It will hold shards on local disk under a quota, serve them over QUIC only on orders
//! signed by the coordinator, answer storage audits and heartbeat to the coordinator.
//! Nothing is built here yet; the crate exists so the workspace has its final shape.
