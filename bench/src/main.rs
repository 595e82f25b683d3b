//! `cairn-bench`: measurements of this machine, printed for people and as one JSON line.
//!
//! Each benchmark runs what it measures in this process, from the library crates (codec,
//! node, coordinator, gateway data path), so the `cairn` binary carries none of it.

mod catalog;
mod coordinator;
mod erasure;
mod measure;
mod node;
mod repair;

use clap::{Parser, Subcommand};

/// Measure this machine: erasure coding, hashing, shard transfers, Raft commits, the
/// catalog's background loops and repair.
///
/// Each command prints a table, then one JSON line for scripts and docs/benchmarks.md.
/// The servers a benchmark starts in process log to stderr; CAIRN_LOG (or RUST_LOG) filters
/// them as it does `cairn`'s (e.g. `CAIRN_LOG=warn`).
#[derive(Parser)]
#[command(name = "cairn-bench", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

/// What to measure.
#[derive(Subcommand)]
enum BenchCommand {
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

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        BenchCommand::Erasure(args) => erasure::run(args),
        BenchCommand::Node(args) => node::run(args),
        BenchCommand::Coordinator(args) => coordinator::run(args),
        BenchCommand::Catalog(args) => catalog::run(args),
        BenchCommand::Repair(args) => repair::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs of the in-process servers on stderr, as `cairn` writes its own: `CAIRN_LOG`, else
/// `RUST_LOG`, holds `target=level` directives; without a valid one, Cairn's own crates log
/// from `info` up and everything else from `warn` up. Colour codes only on a terminal and
/// without `NO_COLOR`. The S3 library, which logs every refused request as an error, stays
/// quiet unless a directive names it.
fn init_logging() {
    use std::io::IsTerminal as _;
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let given = ["CAIRN_LOG", "RUST_LOG"]
        .iter()
        .filter_map(|var| std::env::var(var).ok())
        .find(|text| !text.trim().is_empty())
        .unwrap_or_default();
    let mut filter = given
        .parse::<Targets>()
        .ok()
        .filter(|_| !given.is_empty())
        .unwrap_or_else(|| {
            Targets::new()
                .with_default(LevelFilter::WARN)
                .with_target("cairn", LevelFilter::INFO)
        });
    if !given.contains("s3s") {
        filter = filter.with_target("s3s", LevelFilter::OFF);
    }
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    // The filter decides; the builder's own cap (`info`) would hide `debug` directives.
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .finish();
    subscriber.with(filter).init();
}
