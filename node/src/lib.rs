//! The storage node: the daemon a volunteer runs to offer disk to a Cairn cluster.
//!
//! A node keeps shards on local disk within the space its owner offered ([`store`]), serves
//! them over QUIC only on orders signed by the coordinator ([`server`]), proves on demand
//! that it still holds them, re-hashes them in the background ([`scrub`]) and tells the
//! coordinator how it is doing ([`heartbeat`]). It trusts nobody but the coordinator's key.
//! `cairn_client::node::NodeClient` is the other end of the protocol, used by gateways, the
//! coordinator and tests; [`daemon`] wires everything together from a [`config::NodeConfig`]. [`conduct`] is the
//! seam through which chaos tests make the real node lie; production nodes are honest.
//! [`metrics`] serves Prometheus metrics and, from them, the operator's [`status`] page.

pub mod bandwidth;
pub mod clock;
pub mod conduct;
pub mod config;
pub mod daemon;
pub mod heartbeat;
pub mod metrics;
pub mod scrub;
pub mod server;
pub mod status;
pub mod store;
