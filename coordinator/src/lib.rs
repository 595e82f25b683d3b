//! The coordinator: Cairn's only trusted state, a Raft-replicated catalog and the loops
//! that place, audit, repair and rebalance shards.
//!
//! Nothing is built here yet; the crate exists so the workspace has its final shape.
