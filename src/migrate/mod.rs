//! Moving a binary cache in and checking it: the engines behind `cairn import` and
//! `cairn admin verify`.
//!
//! Both speak plain S3 to any endpoint ([`s3`]: rusty-s3 signs, ureq sends, a thread pool
//! gives the concurrency), walk listings in key order page by page ([`listing`]) and reuse
//! the gateway's own Nix checks (`cairn_gateway::nix`): what an import refuses locally is
//! exactly what a nix-cache bucket would refuse, and verification judges stored objects by
//! the same rules.

pub mod import;
pub mod listing;
pub mod progress;
pub mod s3;
pub mod spill;
pub mod verify;
