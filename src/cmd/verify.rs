//! `cairn admin verify`: flags, the bucket's trusted keys from the admin API, then the walk
//! in `crate::migrate::verify`.

use std::time::Duration;

use anyhow::Context as _;
use cairn_client::admin_views::BucketView;
use cairn_gateway::nix::keys::TrustedKey;
use cairn_proto::bytesize::ByteSize;
use clap::Args;

use crate::migrate::s3::{Endpoint, S3Client};
use crate::migrate::verify::{Verify, print_report, run as run_verify};

/// Options of `cairn admin verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// The nix-cache bucket to check.
    bucket: String,
    /// Also read every NAR and check it against its narinfos' FileHash and NarHash (reads
    /// the whole bucket).
    #[arg(long)]
    deep: bool,
    /// S3 endpoint the bucket is read through (a gateway).
    #[arg(
        long,
        env = "CAIRN_S3_ENDPOINT",
        default_value = "http://127.0.0.1:9000"
    )]
    s3_endpoint: String,
    /// Access key id for the gateway (listing needs one, even for a public bucket).
    #[arg(long, env = "CAIRN_ACCESS_KEY")]
    access_key: String,
    /// Secret key for the gateway.
    #[arg(long, env = "CAIRN_SECRET_KEY", hide_env_values = true)]
    secret_key: String,
    /// Check signatures against these keys (NAME:BASE64, repeat for several) instead of the
    /// bucket's: e.g. which narinfos would fail once a key is no longer trusted. This also
    /// checks a plain bucket that holds a binary cache.
    #[arg(long = "trusted-key")]
    trusted_keys: Vec<String>,
    /// Requests in flight at once (narinfo reads; NAR reads with --deep).
    #[arg(long, default_value_t = 16)]
    jobs: usize,
    /// Further tries of a request after a transient failure.
    #[arg(long, default_value_t = 5)]
    retries: u32,
    /// Memory for sorting the narinfos' NAR references before they are spilled to a
    /// temporary file (in TMPDIR) in sorted runs.
    #[arg(long, default_value = "256MiB")]
    sort_memory: ByteSize,
    /// Seconds between progress lines when stderr is not a terminal (0: none).
    #[arg(long, default_value_t = 10)]
    progress_interval: u64,
}

/// Checks the bucket named in `args`, whose record is among `buckets` (from the admin API);
/// an error if the walk failed or found any fault.
pub fn run(args: VerifyArgs, buckets: &[BucketView], json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(args.jobs >= 1, "--jobs must be at least 1");
    let bucket = buckets
        .iter()
        .find(|b| b.name == args.bucket)
        .with_context(|| format!("no bucket named {:?}", args.bucket))?;
    let keys = if args.trusted_keys.is_empty() {
        anyhow::ensure!(
            bucket.mode == "nix-cache",
            "bucket {} is a {} bucket, with no trusted keys: give --trusted-key to check the \
             binary cache it holds",
            bucket.name,
            bucket.mode
        );
        &bucket.trusted_keys
    } else {
        &args.trusted_keys
    };
    let trusted = keys
        .iter()
        .map(|k| TrustedKey::parse(k).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let endpoint = Endpoint::new(
        &args.s3_endpoint,
        "us-east-1",
        true,
        Some((args.access_key, args.secret_key, None)),
    )?;
    let verify = Verify {
        client: S3Client::new(&endpoint, &bucket.name, args.jobs)?,
        bucket: bucket.name.clone(),
        trusted,
        deep: args.deep,
        jobs: args.jobs,
        retries: args.retries,
        progress_interval: Duration::from_secs(args.progress_interval),
        spill_budget: usize::try_from(args.sort_memory.0).unwrap_or(usize::MAX),
    };
    let report = run_verify(&verify)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    anyhow::ensure!(
        report.faults == 0,
        "{} faults in bucket {} (each named above)",
        report.faults,
        report.bucket
    );
    Ok(())
}
