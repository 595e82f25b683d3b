//! `cairn`: one binary for every part of a Cairn cluster.
//!
//! This file only parses the command line and hands off; each subcommand lives in its own
//! module and the real work in the library crates.

mod bench;
mod bytesize;

use clap::{Parser, Subcommand};

/// Cairn: a sharded, trustless object store for Nix binary caches.
///
/// Objects arrive through an S3-compatible API, are cut into segments, Reed-Solomon coded
/// into shards and stored on untrusted volunteer nodes; a Raft-replicated coordinator keeps
/// the catalog and checks that every node still holds what it promised.
#[derive(Parser)]
#[command(name = "cairn", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure this machine: erasure coding and hashing speed.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(command) => bench::run(command),
    }
}
