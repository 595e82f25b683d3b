//! Types shared by the node, the coordinator and the gateway: who is talking (ed25519
//! identities), what they may do (coordinator-signed orders, node-signed receipts), how
//! messages are framed on the wire, and the QUIC transport that pins every peer's key.
//!
//! Nothing here holds state or does policy; it is the vocabulary the other crates share
//! (including [`bytesize::ByteSize`], the size notation of every config file and flag).

#![warn(missing_docs)]

pub mod bytesize;
pub mod identity;
pub mod ids;
pub mod invite;
pub mod order;
pub mod transport;
pub mod wire;
