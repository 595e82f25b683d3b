//! `cairn`: one binary for every part of a Cairn cluster.
//!
//! This file only parses the command line and hands off; each subcommand lives in its own
//! module and the real work in the library crates.

mod cmd;
mod migrate;

use clap::{Parser, Subcommand};

/// Cairn: a sharded, trustless object store for Nix binary caches.
///
/// Objects arrive through an S3-compatible API, are cut into segments, Reed-Solomon coded
/// into shards and stored on untrusted volunteer nodes; a Raft-replicated coordinator keeps
/// the catalog and checks that every node still holds what it promised.
///
/// Logs go to stderr: Cairn's own events from `info` up, other libraries' (Raft, QUIC)
/// only from `warn` up, coloured only on a terminal. `cairn dev` also leaves out its
/// in-process nodes' events and the start-up announcements its banner sums up. Set
/// CAIRN_LOG (or RUST_LOG) to change what they show (e.g. `debug`, `info,cairn_node=debug`
/// or `warn,cairn=info,openraft=info`).
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
    /// Operate a cluster through a coordinator's admin API (status, members, buckets, keys,
    /// verifying a nix-cache bucket).
    Admin(Box<cmd::admin::AdminArgs>),
    /// Copy a bucket (any S3) or a `file://` binary cache into a bucket, resumably and
    /// verified: moving a cache into Cairn, or mirroring Cairn back out.
    ///
    /// SOURCE is `s3://BUCKET[/PREFIX]` (at --source-endpoint, with the usual AWS
    /// environment variables) or `file:///PATH`, a binary cache directory as
    /// `nix copy --to file://…` writes it. DESTINATION is `s3://BUCKET[/PREFIX]` at
    /// --endpoint: Cairn's S3 gateway with one of its access keys, or any S3 service.
    ///
    /// Every object the destination lacks, or holds with another size or MD5 ETag, is
    /// copied: a run after a kill resumes, and one over a finished import copies nothing.
    /// NARs and everything else go first, narinfos after, so no narinfo is served before its
    /// NAR. Objects up to --part-size go in one PUT, larger ones as multipart uploads; at
    /// most --jobs × --part-size bytes are held in memory. Each copy is checked against the
    /// source's size and ETag and the destination's ETag. With --nix-cache, narinfos must be
    /// signed by a --trusted-key and NARs must hash to their names, as a nix-cache bucket
    /// demands.
    ///
    /// Failures are printed by name with the reason as they happen and counted; the exit
    /// status is non-zero if any object failed. Progress: a bar on a terminal, a line every
    /// --progress-interval seconds otherwise; a summary at the end (JSON with --json).
    Import(Box<cmd::import::ImportArgs>),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(matches!(cli.command, Command::Dev(_)));
    let result = match cli.command {
        Command::Coordinator(args) => cmd::coordinator::run(*args),
        Command::Node(args) => cmd::node::run(*args),
        Command::Gateway(args) => cmd::gateway::run(*args),
        Command::Dev(args) => cmd::dev::run(*args),
        Command::Admin(args) => cmd::admin::run(*args),
        Command::Import(args) => cmd::import::run(*args),
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

/// Structured logs on stderr. The filter is `CAIRN_LOG`, else `RUST_LOG`, as
/// comma-separated `target=level` directives (a bare level sets the default; a target
/// matches every target it prefixes, e.g. `cairn_node` covers `cairn_node::store`).
/// Without either: [`DEFAULT_LOG`] (Cairn's own crates, every target starting with `cairn`,
/// at `info`; everything else, openraft's and quinn's routine events included, at `warn`),
/// or for `cairn dev` ([`DEV_LOG`]) the same without its in-process nodes' events and the
/// start-up announcements its banner replaces. Colour codes only when stderr is a terminal
/// and `NO_COLOR` is unset.
fn init_logging(dev: bool) {
    use std::io::IsTerminal as _;
    use tracing::level_filters::LevelFilter;
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let default = || {
        let text = if dev { DEV_LOG } else { DEFAULT_LOG };
        text.parse::<Targets>()
            .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO))
    };
    let chosen = ["CAIRN_LOG", "RUST_LOG"].into_iter().find_map(|var| {
        std::env::var(var)
            .ok()
            .filter(|text| !text.trim().is_empty())
            .map(|text| (var, text))
    });
    let (mut filter, text) = match chosen {
        None => (default(), String::new()),
        Some((var, text)) => match text.parse::<Targets>() {
            Ok(filter) => (filter, text),
            Err(err) => {
                eprintln!("cairn: ignoring {var}={text:?} ({err}); logging at the default levels");
                (default(), String::new())
            }
        },
    };
    // The S3 library logs every refused request (404s and 304s included) as an error; the
    // gateway's own logs and metrics say what matters, so it is quiet unless asked for.
    if !text.contains("s3s") {
        filter = filter.with_target("s3s", LevelFilter::OFF);
    }
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(colour),
        )
        .with(filter)
        .init();
}

/// The log filter of every command but `cairn dev`, unless CAIRN_LOG or RUST_LOG is set.
const DEFAULT_LOG: &str = "warn,cairn=info";

/// `cairn dev`'s: nodes, the coordinator's serving and joining announcements and the
/// gateway's are what its banner prints; the coordinator's judgements (suspect, lost,
/// repairs, audits) and every warning still show.
const DEV_LOG: &str = "warn,cairn=info,cairn_node=warn,cairn_coordinator::daemon=warn,cairn_coordinator::node_rpc=warn,cairn_gateway::daemon=warn";
