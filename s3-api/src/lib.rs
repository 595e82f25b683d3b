//! The S3 gateway: the S3-compatible front door through which Hydra uploads and a CDN reads.
//!
//! So far it holds only [`nix`], the authenticity checks a bucket in *nix-cache* mode applies to
//! every upload (narinfo signatures, NAR hashes); the HTTP side, SigV4 and the streaming
//! erasure-coded writes come later and call into it.

pub mod nix;
pub mod store;
