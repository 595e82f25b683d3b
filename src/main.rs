//! `cairn`: one binary for every part of a Cairn cluster.
//!
//! This file only parses the command line and hands off; each subcommand lives in its own
//! module and the real work in the library crates.

mod bench;
mod cmd;

use clap::{Parser, Subcommand};

/// Cairn: a sharded, trustless object store for Nix binary caches.
///
/// Objects arrive through an S3-compatible API, are cut into segments, Reed-Solomon coded
/// into shards and stored on untrusted volunteer nodes; a Raft-replicated coordinator keeps
/// the catalog and checks that every node still holds what it promised.
///
/// Logs go to stderr; set CAIRN_LOG to change what they show (e.g. `debug` or
/// `info,cairn_node=debug`).
#[derive(Parser)]
#[command(name = "cairn", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a coordinator member: the Raft-replicated catalog and the cluster's brain.
    Coordinator(Box<cmd::coordinator::CoordinatorArgs>),
    /// Run a storage node: offer disk to a cluster, serve shards on coordinator-signed orders.
    Node(Box<cmd::node::NodeArgs>),
    /// Run a whole local cluster in one process (coordinator, nodes, gateway, a bucket and
    /// an access key), with its data in one folder: the quickest way to try Cairn.
    Dev(Box<cmd::dev::DevArgs>),
    /// Run an S3 gateway: the front door Hydra uploads through and a CDN reads from.
    Gateway(Box<cmd::gateway::GatewayArgs>),
    /// Operate a cluster through a coordinator's admin API (status, members, buckets, keys).
    Admin(Box<cmd::admin::AdminArgs>),
    /// Measure this machine: erasure coding, hashing and shard transfer speed.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> std::process::ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Coordinator(args) => cmd::coordinator::run(*args),
        Command::Node(args) => cmd::node::run(*args),
        Command::Gateway(args) => cmd::gateway::run(*args),
        Command::Dev(args) => cmd::dev::run(*args),
        Command::Admin(args) => cmd::admin::run(*args),
        Command::Bench(command) => bench::run(command),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // The whole chain of causes on one line, without a backtrace: this is for the
            // person at the terminal.
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Structured logs on stderr, filtered by `CAIRN_LOG` (default `info`).
fn init_logging() {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let text = std::env::var("CAIRN_LOG").unwrap_or_default();
    let mut filter = text
        .parse::<Targets>()
        .ok()
        .filter(|_| !text.is_empty())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    // The S3 library logs every refused request (404s and 304s included) as an error; the
    // gateway's own logs and metrics say what matters, so it is quiet unless asked for.
    if !text.contains("s3s") {
        filter = filter.with_target("s3s", tracing::level_filters::LevelFilter::OFF);
    }
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
}
