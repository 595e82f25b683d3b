//! The S3 gateway: the front door through which Hydra uploads and a CDN reads.
//!
//! Nothing is built here yet; the crate exists so the workspace has its final shape.
