//! What talks to Cairn's servers: the clients of the coordinator's gateway RPC and of the
//! storage nodes, and the messages and records they carry.
//!
//! The S3 gateway, the coordinator and the node each build on this crate and on `proto` and
//! `erasure` only, never on one another. [`records`] are the wire's own copies of what the
//! catalog stores, so that neither can change the other's format; [`gateway_rpc`] the
//! gateway's requests and the coordinator's answers; [`coordinator::CoordinatorClient`]
//! asks them of the group's leader, one typed method per request ([`calls`]);
//! [`node::NodeClient`] stores, reads, audits and deletes shards on one node, checking every
//! byte it gets back. [`page`] holds what the operator pages of the coordinator and the node
//! share; [`admin_views`] the JSON the coordinator's admin API and `cairn admin` exchange.

pub mod admin_views;
pub mod calls;
pub mod coordinator;
pub mod gateway_rpc;
pub mod node;
pub mod page;
pub mod records;
