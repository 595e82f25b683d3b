//! The S3 gateway: the S3-compatible front door through which Hydra uploads and a CDN reads.
//!
//! [`daemon::start`] serves S3 (on s3s) over HTTP. [`service::Gateway`] implements the
//! operations (one file per family under `s3_operations/`) on top of the coordinator's
//! gateway RPC and the [`data_path`], which moves bodies to and from nodes as verified,
//! erasure-coded segments. [`access`] decides who may do what; [`nix`] holds the checks a
//! bucket in *nix-cache* mode applies to every upload (narinfo signatures, NAR hashes).
//! Around s3s, the `request` module gives every request its id and puts the few requests
//! s3s would take differently from S3 into S3's shape first. [`throttle`] tells which
//! client a request comes from and limits anonymous ones per client; the `timeouts` module
//! gives up on request bodies and connections a client leaves idle.

pub mod access;
mod answers;
mod checksums;
pub mod config;
pub mod daemon;
pub mod data_path;
mod errors;
pub mod metrics;
pub mod nix;
mod request;
mod s3_operations;
pub mod service;
pub mod throttle;
mod timeouts;
