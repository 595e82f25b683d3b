//! `cairn import`: flags, then the copy in `crate::migrate::import`.

use std::time::Duration;

use anyhow::Context as _;
use cairn_gateway::nix::keys::TrustedKey;
use cairn_proto::bytesize::ByteSize;
use clap::Args;

use crate::migrate::import::{Import, print_summary, run as run_import};
use crate::migrate::listing::{Location, Source};
use crate::migrate::s3::{Endpoint, S3Client};

/// Options of `cairn import` (its help text is on the subcommand in `main.rs`).
#[derive(Args)]
#[command(
    after_help = "Examples:\n  cairn import --source-endpoint https://s3.eu-west-1.amazonaws.com \\\n      --nix-cache --trusted-key \"$(cat cache.pk)\" s3://old-cache s3://nix\n  cairn import 'file:///srv/cache' s3://nix --jobs 32\n  cairn import --since 2026-05-01T00:00:00Z s3://old-cache s3://nix   # the cut-over pass"
)]
pub struct ImportArgs {
    /// Where to copy from: s3://BUCKET[/PREFIX] or file:///PATH.
    source: String,
    /// Where to copy to: s3://BUCKET[/PREFIX] at --endpoint.
    destination: String,
    /// S3 endpoint of the destination (Cairn's gateway, or any S3 service).
    #[arg(
        long,
        env = "CAIRN_S3_ENDPOINT",
        default_value = "http://127.0.0.1:9000"
    )]
    endpoint: String,
    /// Access key id for the destination.
    #[arg(long, env = "CAIRN_ACCESS_KEY")]
    access_key: Option<String>,
    /// Secret key for the destination.
    #[arg(long, env = "CAIRN_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// Region requests to the destination are signed for.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Address the destination bucket in the host name (bucket.endpoint) instead of the
    /// path (endpoint/bucket).
    #[arg(long)]
    virtual_hosted: bool,
    /// S3 endpoint of an s3:// source [default: AWS, https://s3.REGION.amazonaws.com, with
    /// the bucket in the host name].
    #[arg(long, env = "CAIRN_SOURCE_ENDPOINT")]
    source_endpoint: Option<String>,
    /// Access key id for the source (none: anonymous reads of a public bucket).
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    source_access_key: Option<String>,
    /// Secret key for the source.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    source_secret_key: Option<String>,
    /// Session token for temporary source credentials.
    #[arg(long, env = "AWS_SESSION_TOKEN", hide_env_values = true)]
    source_session_token: Option<String>,
    /// Region of the source.
    #[arg(long, env = "AWS_DEFAULT_REGION", default_value = "us-east-1")]
    source_region: String,
    /// Address the source bucket in the host name even with --source-endpoint.
    #[arg(long)]
    source_virtual_hosted: bool,
    /// Objects copied at once (one thread and at most one part in memory each).
    #[arg(long, default_value_t = 16)]
    jobs: usize,
    /// Largest object sent in one PUT, and the part size of larger ones (at least 5MiB, as
    /// S3 requires of every part but the last; raised for objects over 10 000 parts).
    #[arg(long, default_value = "8MiB")]
    part_size: ByteSize,
    /// Further tries of a request after a transient failure (no answer, 5xx, SlowDown),
    /// waiting 0.2 s, 0.4 s, … up to 10 s between them.
    #[arg(long, default_value_t = 5)]
    retries: u32,
    /// Only source objects modified at or after this time (RFC 3339, e.g.
    /// 2026-05-01T00:00:00Z, or an age such as 6h or 2d, counting 24-hour days), each
    /// looked up in the destination instead of listing all of it: the short pass that
    /// catches what was uploaded meanwhile.
    #[arg(long)]
    since: Option<String>,
    /// Check Nix authenticity before uploading, as a nix-cache bucket does: narinfos signed
    /// by a --trusted-key and held back until their NAR is in the destination, NARs hashing
    /// to their names. What fails is reported, not sent.
    #[arg(long, requires = "trusted_keys")]
    nix_cache: bool,
    /// A key whose narinfo signatures are accepted, NAME:BASE64 (repeat for several; the
    /// destination bucket's trusted keys).
    #[arg(long = "trusted-key")]
    trusted_keys: Vec<String>,
    /// Only show what would be copied.
    #[arg(long)]
    dry_run: bool,
    /// Print the summary as JSON (progress and failures still go to stderr).
    #[arg(long)]
    json: bool,
    /// Seconds between progress lines when stderr is not a terminal (0: none).
    #[arg(long, default_value_t = 10)]
    progress_interval: u64,
}

/// Runs one import; an error if it could not run or any object failed.
pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.jobs >= 1, "--jobs must be at least 1");
    anyhow::ensure!(
        args.part_size.0 >= 5 << 20,
        "--part-size must be at least 5MiB (S3's smallest part)"
    );
    let trusted = args
        .trusted_keys
        .iter()
        .map(|k| TrustedKey::parse(k).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(
        args.nix_cache || trusted.is_empty(),
        "--trusted-key is only used with --nix-cache"
    );
    let since = args.since.as_deref().map(parse_since).transpose()?;

    let source = match Location::parse(&args.source).context("SOURCE")? {
        Location::S3 { bucket, prefix } => {
            let (url, path_style) = match &args.source_endpoint {
                Some(url) => (url.clone(), !args.source_virtual_hosted),
                None => (
                    format!("https://s3.{}.amazonaws.com", args.source_region),
                    false,
                ),
            };
            let key = credentials(
                args.source_access_key,
                args.source_secret_key,
                args.source_session_token,
                "--source-access-key (AWS_ACCESS_KEY_ID)",
                "--source-secret-key (AWS_SECRET_ACCESS_KEY)",
            )?;
            let endpoint = Endpoint::new(&url, &args.source_region, path_style, key)?;
            Source::S3 {
                client: Box::new(S3Client::new(&endpoint, &bucket, args.jobs)?),
                prefix,
            }
        }
        Location::Dir(path) => {
            anyhow::ensure!(
                path.is_dir(),
                "SOURCE {} is not a directory",
                path.display()
            );
            Source::Dir(path)
        }
    };
    let Location::S3 {
        bucket,
        prefix: destination_prefix,
    } = Location::parse(&args.destination).context("DESTINATION")?
    else {
        anyhow::bail!("DESTINATION must be s3://BUCKET[/PREFIX]");
    };
    let key = credentials(
        args.access_key,
        args.secret_key,
        None,
        "--access-key (CAIRN_ACCESS_KEY)",
        "--secret-key (CAIRN_SECRET_KEY)",
    )?
    .context("the destination needs an access key: --access-key and --secret-key (or CAIRN_ACCESS_KEY and CAIRN_SECRET_KEY)")?;
    let endpoint = Endpoint::new(
        &args.endpoint,
        &args.region,
        !args.virtual_hosted,
        Some(key),
    )?;
    let destination = S3Client::new(&endpoint, &bucket, args.jobs)?;
    let destination_label = format!(
        "{}{}",
        destination.label(),
        prefix_note(&destination_prefix)
    );
    let import = Import {
        source,
        destination,
        destination_prefix,
        jobs: args.jobs,
        part_size: args.part_size.0,
        retries: args.retries,
        since,
        nix: args.nix_cache.then_some(trusted),
        dry_run: args.dry_run,
        progress_interval: Duration::from_secs(args.progress_interval),
    };
    let source_label = import.source.label();
    let summary = run_import(&import, &source_label, &destination_label)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    anyhow::ensure!(
        summary.failed == 0,
        "{} objects failed (each named above with its reason)",
        summary.failed
    );
    Ok(())
}

fn prefix_note(prefix: &str) -> String {
    if prefix.is_empty() {
        String::new()
    } else {
        format!(" (prefix {prefix})")
    }
}

/// A key pair from flags or the environment: both or neither.
fn credentials(
    id: Option<String>,
    secret: Option<String>,
    token: Option<String>,
    id_flag: &str,
    secret_flag: &str,
) -> anyhow::Result<Option<(String, String, Option<String>)>> {
    match (
        id.filter(|s| !s.is_empty()),
        secret.filter(|s| !s.is_empty()),
    ) {
        (Some(id), Some(secret)) => Ok(Some((id, secret, token.filter(|t| !t.is_empty())))),
        (None, None) => Ok(None),
        (Some(_), None) => anyhow::bail!("{id_flag} is set but {secret_flag} is not"),
        (None, Some(_)) => anyhow::bail!("{secret_flag} is set but {id_flag} is not"),
    }
}

/// `--since`: an RFC 3339 time, or an age (`6h`, `2d`, `90m`) before now.
fn parse_since(text: &str) -> anyhow::Result<jiff::Timestamp> {
    if let Ok(time) = text.parse::<jiff::Timestamp>() {
        return Ok(time);
    }
    let bad = || {
        anyhow::anyhow!(
            "--since {text:?}: expected an RFC 3339 time (2026-05-01T00:00:00Z) or an age \
             (6h, 90m, 2d, 1w)"
        )
    };
    // An age in days or weeks counts 24-hour days: "2d" means 48 hours ago.
    let age = text
        .parse::<jiff::Span>()
        .map_err(|_| bad())?
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|_| bad())?;
    jiff::Timestamp::now()
        .checked_sub(age)
        .map_err(|err| anyhow::anyhow!("--since {text:?}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_times_and_ages() {
        assert_eq!(
            parse_since("2026-05-01T00:00:00Z").unwrap().to_string(),
            "2026-05-01T00:00:00Z"
        );
        for (text, secs) in [("6h", 6 * 3600), ("90m", 5400), ("2d", 2 * 86400)] {
            let age = jiff::Timestamp::now().duration_since(parse_since(text).unwrap());
            assert!((age.as_secs() - secs).abs() < 60, "{text}: {age:?}");
        }
        assert!(parse_since("yesterday-ish").is_err());
    }

    #[test]
    fn key_pairs_come_whole() {
        assert!(credentials(None, None, None, "a", "b").unwrap().is_none());
        assert!(credentials(Some("x".into()), None, None, "a", "b").is_err());
        assert_eq!(
            credentials(Some("x".into()), Some("y".into()), None, "a", "b").unwrap(),
            Some(("x".into(), "y".into(), None))
        );
    }
}
