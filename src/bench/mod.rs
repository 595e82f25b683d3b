//! `cairn bench`: measurements of this machine, printed for people and as one JSON line.

mod catalog;
mod coordinator;
mod erasure;
mod measure;
mod node;
mod repair;

use clap::Subcommand;

/// What to measure.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Erasure coding on one core: memcpy, BLAKE3, encode, encode+hash, rebuild, streaming.
    ///
    /// Prints a table, then one JSON line (GiB/s of user data) for scripts and
    /// docs/benchmarks.md.
    Erasure(erasure::ErasureArgs),
    /// Shard PUT and GET over loopback QUIC to a real node, beside a plain TCP copy.
    ///
    /// Prints a table, then one JSON line with MiB/s and the QUIC ÷ TCP ratios.
    Node(node::NodeBenchArgs),
    /// Committed inline-object writes per second through Raft (1 or 3 members in this
    /// process, over loopback QUIC), and catalog bytes on disk per object.
    Coordinator(coordinator::CoordinatorBenchArgs),
    /// A catalog of N objects (70 % inline narinfos, 30 % one-segment 10+6 NARs) loaded
    /// straight into redb: bytes on disk per object, and the time and peak memory growth
    /// of one round of each background loop's catalog work (placed_on, audit sample, GC
    /// comparison of one node, rebalance candidates, survey).
    ///
    /// Prints a table, then one JSON line.
    Catalog(catalog::CatalogBenchArgs),
    /// Time to restore full margin after losing the fullest node, against the configured
    /// repair bandwidth (one coordinator, N nodes and a gateway in this process).
    ///
    /// Prints a table, then one JSON line with the node's bytes, the times to lost and to
    /// full margin, the bytes rebuilt and the measured ÷ ideal ratios.
    Repair(repair::RepairBenchArgs),
}

/// Runs one benchmark.
pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Erasure(args) => erasure::run(args),
        BenchCommand::Node(args) => node::run(args),
        BenchCommand::Coordinator(args) => coordinator::run(args),
        BenchCommand::Catalog(args) => catalog::run(args),
        BenchCommand::Repair(args) => repair::run(args),
    }
}
