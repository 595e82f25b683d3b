//! Raft integration: the pieces that plug Cairn's catalog into openraft.
//!
//! [`types::TypeConfig`] fixes the types; [`log_store::LogStore`] keeps the log durable in
//! its own redb file; [`state_machine::StateMachine`] applies committed commands to the
//! catalog and builds and installs snapshots; [`network`] carries the RPCs between members
//! over QUIC, authenticated by the shared coordinator key.

pub mod leader_ticks;
pub mod log_store;
pub mod network;
pub mod snapshot_file;
pub mod state_machine;
pub mod types;
