//! Whole-cluster tests with faults injected: real processes on separate addresses, killed,
//! paused, partitioned, filled up and made to lie.
//!
//! Nothing is built here yet; the crate exists so the workspace has its final shape.
