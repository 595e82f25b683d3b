//! `cairn-chaos-node`: the real storage node daemon, made to misbehave in one chosen way,
//! optionally behind a lossy, slow link. For tests only: it proves the cluster catches
//! nodes that lie, lag or lose packets.
//!
//! It reads the same TOML config as `cairn node --config`, joins with the same invitation,
//! heartbeats, stores shards and signs receipts like any node. Like `cairn node`, it prints
//! `node id: …` and `listening on …` (the address clients should dial: the relay's, when a
//! link is in front) on stdout once serving, after a `misbehaviour: …` line.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use cairn_chaos_tests::lossy_link::{LinkConfig, LossyLink};
use cairn_chaos_tests::misbehaviour::Misbehaviour;
use cairn_chaos_tests::refetch::PublicObjects;
use cairn_node::config::NodeConfig;
use cairn_proto::bytesize::ByteSize;
use cairn_proto::wire::ErrorCode;
use clap::{ArgGroup, Parser};

/// The real Cairn storage node, misbehaving on purpose (test use only).
///
/// Choose exactly one of --honest, --drop-after-receipt, --drop-share, --flip-bytes,
/// --late-audits, --refetch-audits, --refuse and --refuse-reads; any of them may run behind a lossy link (--link-*).
#[derive(Parser, Debug)]
#[command(name = "cairn-chaos-node", version)]
#[command(group(
    ArgGroup::new("misbehaviour")
        .required(true)
        .multiple(false)
        .args(["honest", "drop_after_receipt", "drop_share", "flip_bytes", "late_audits", "refetch_audits", "refuse", "refuse_reads"])
))]
struct Args {
    /// The node's TOML config file: the same fields as `cairn node --config` (data_dir,
    /// listen, coordinator_key or join, capacity, …).
    #[arg(long, short, value_name = "FILE")]
    config: PathBuf,

    /// Join token from `cairn admin invite` (overrides the config's `join`): registers the
    /// node on its first start.
    #[arg(long, value_name = "TOKEN")]
    join: Option<String>,

    /// No misbehaviour: an honest node (with --link-* options, an honest node on a bad link).
    #[arg(long)]
    honest: bool,

    /// Store each shard, sign its receipt, then delete the bytes, and keep claiming the
    /// shard in inventories: only audits can catch it.
    #[arg(long)]
    drop_after_receipt: bool,

    /// Like --drop-after-receipt, but only for a share P (0 to 1, e.g. 0.2) of the shards,
    /// picked by a keyed hash of each shard id (`misbehaviour::drops_shard`); the others
    /// are stored and served honestly.
    #[arg(long, value_name = "P", value_parser = parse_share)]
    drop_share: Option<f64>,

    /// Serve every GET and audit with one shard byte flipped (proofs otherwise as computed,
    /// so clients' verification catches it).
    #[arg(long)]
    flip_bytes: bool,

    /// Answer every audit MS milliseconds late.
    #[arg(long, value_name = "MS")]
    late_audits: Option<u64>,

    /// Drop shards after their receipts like --drop-after-receipt, and answer audits by
    /// downloading the --public-object URLs, encoding them again with --k, --m and
    /// --segment-size, and proving the rebuilt shard whose root is the audited one (or, if
    /// none matches, a rebuilt shard of the same size: a lazy node has nothing better).
    #[arg(long, requires_all = ["public_object", "k", "m", "segment_size"])]
    refetch_audits: bool,

    /// Plain-HTTP URL of a public object to rebuild shards from (anonymous GET); repeat for
    /// each object. With --refetch-audits.
    #[arg(
        long = "public-object",
        value_name = "URL",
        requires = "refetch_audits"
    )]
    public_object: Vec<String>,

    /// Data shards per segment of the public objects' bucket. With --refetch-audits.
    #[arg(long, value_name = "K", requires = "refetch_audits")]
    k: Option<usize>,

    /// Parity shards per segment of the public objects' bucket. With --refetch-audits.
    #[arg(long, value_name = "M", requires = "refetch_audits")]
    m: Option<usize>,

    /// Segment size of the public objects' bucket, e.g. 67108864 or 64MiB. With
    /// --refetch-audits.
    #[arg(long, value_name = "BYTES", requires = "refetch_audits")]
    segment_size: Option<ByteSize>,

    /// Drop shards after their receipts like --drop-after-receipt, and refuse every GET
    /// and audit with this error code (busy, expired, replayed, bad_range, internal, …).
    #[arg(long, value_name = "CODE", value_parser = parse_code)]
    refuse: Option<ErrorCode>,
    /// Keep every shard and answer audits honestly, but refuse every GET with this error
    /// code (busy, internal, …): storage that proves out while serving nobody.
    #[arg(long, value_name = "CODE", value_parser = parse_code)]
    refuse_reads: Option<ErrorCode>,

    /// Hold every datagram, each way, D milliseconds. Any non-zero --link-* option puts a
    /// lossy UDP relay on the configured `listen` address (advertised to the coordinator
    /// unless `advertise` is set) and moves the node itself to an internal port.
    #[arg(long, value_name = "D", default_value_t = 0)]
    link_delay_ms: u64,

    /// Up to this many more milliseconds of delay, at random per datagram (relay only).
    #[arg(long, value_name = "J", default_value_t = 0)]
    link_jitter_ms: u64,

    /// Percentage of datagrams the relay drops, in each direction (0 to 100).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    link_drop_percent: f64,
}

impl Args {
    fn misbehaviour(&self) -> Result<Misbehaviour, String> {
        if self.drop_after_receipt {
            return Ok(Misbehaviour::DropAfterReceipt);
        }
        if let Some(share) = self.drop_share {
            return Ok(Misbehaviour::DropShare(share));
        }
        if self.flip_bytes {
            return Ok(Misbehaviour::FlipBytes);
        }
        if let Some(ms) = self.late_audits {
            return Ok(Misbehaviour::LateAudits(Duration::from_millis(ms)));
        }
        if let Some(code) = self.refuse {
            return Ok(Misbehaviour::Refuses(code));
        }
        if let Some(code) = self.refuse_reads {
            return Ok(Misbehaviour::RefusesReads(code));
        }
        if self.refetch_audits {
            // clap has checked these are all present; the messages are a second line of
            // defence, not reachable from the command line.
            let k = self.k.ok_or("--refetch-audits needs --k")?;
            let m = self.m.ok_or("--refetch-audits needs --m")?;
            let size = self
                .segment_size
                .ok_or("--refetch-audits needs --segment-size")?;
            let objects = PublicObjects::new(self.public_object.clone(), k, m, size.0)
                .map_err(|err| format!("--refetch-audits: {err}"))?;
            return Ok(Misbehaviour::RefetchAudits(Arc::new(objects)));
        }
        Ok(Misbehaviour::Honest)
    }

    fn link(&self) -> LinkConfig {
        LinkConfig {
            delay: Duration::from_millis(self.link_delay_ms),
            jitter: Duration::from_millis(self.link_jitter_ms),
            drop_percent: self.link_drop_percent,
            seed: None,
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let text = std::fs::read_to_string(&args.config)
        .map_err(|err| format!("cannot read config file {}: {err}", args.config.display()))?;
    let mut config = NodeConfig::from_toml(&text).map_err(|err| err.to_string())?;
    if let Some(token) = &args.join {
        config.join = Some(token.clone());
    }
    let link = args.link();
    // Checked before the node starts: a start would use up the invitation.
    if !(0.0..=100.0).contains(&link.drop_percent) {
        return Err("--link-drop-percent must be between 0 and 100".into());
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|err| err.to_string())?;
    runtime.block_on(async move {
        let misbehaviour = args.misbehaviour()?;
        // With a link, the relay takes the configured address and the node moves to a free
        // port on the same interface; the relay's address is what the node advertises.
        let front = if link.is_perfect() {
            None
        } else {
            let socket = tokio::net::UdpSocket::bind(config.listen)
                .await
                .map_err(|err| format!("relay cannot bind {}: {err}", config.listen))?;
            let addr = socket.local_addr().map_err(|err| err.to_string())?;
            if config.advertise.is_none() {
                config.advertise = Some(addr.to_string());
            }
            config.listen = SocketAddr::new(config.listen.ip(), 0);
            Some((socket, addr))
        };
        let node = cairn_node::daemon::start_with_conduct(config, misbehaviour.conduct())
            .await
            .map_err(|err| err.to_string())?;
        let (relay, listening) = match front {
            Some((socket, addr)) => {
                let upstream = reachable(node.quic_addr);
                let relay = LossyLink::with_socket(socket, upstream, link)
                    .map_err(|err| format!("relay: {err}"))?;
                (Some(relay), addr)
            }
            None => (None, node.quic_addr),
        };
        // Plain lines on stdout for people and scripts, as `cairn node` prints them.
        println!("misbehaviour: {}", misbehaviour.describe());
        println!("node id: {}", node.id);
        println!("listening on {listening}");
        if let Some(relay) = &relay {
            println!(
                "lossy link: {} -> {}, delay {} ms (+ up to {} ms jitter), dropping {} % each way",
                relay.local_addr(),
                relay.upstream(),
                link.delay.as_millis(),
                link.jitter.as_millis(),
                link.drop_percent
            );
        }
        if let Some(addr) = node.metrics_addr {
            println!("metrics on http://{addr}/metrics");
        }
        shutdown_signal().await;
        tracing::info!("shutting down");
        drop(relay);
        node.shutdown().await;
        Ok(())
    })
}

/// Where the relay reaches the node: its own address, or loopback if it listens on all
/// interfaces.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// Waits for Ctrl-C or SIGTERM, whichever comes first.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Structured logs on stderr, filtered by `CAIRN_LOG` (default `info`), as `cairn` does.
fn init_logging() {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let text = std::env::var("CAIRN_LOG").unwrap_or_default();
    let filter = text
        .parse::<Targets>()
        .ok()
        .filter(|_| !text.is_empty())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
}

/// An error code by its wire name (`busy`, `expired`, …).
fn parse_code(name: &str) -> Result<ErrorCode, String> {
    use ErrorCode::*;
    [
        BadSignature,
        WrongNode,
        WrongClient,
        Expired,
        Replayed,
        WrongAction,
        RootMismatch,
        SizeMismatch,
        OverQuota,
        NotFound,
        Damaged,
        BadRange,
        Malformed,
        TooLarge,
        Busy,
        Internal,
        Forbidden,
    ]
    .into_iter()
    .find(|code| code.as_str() == name)
    .ok_or_else(|| format!("no error code named {name:?}"))
}

/// A share of shards to drop: a number from 0 to 1 (`0.2` drops a fifth).
fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!("{text:?} is not a share between 0 and 1")),
    }
}
