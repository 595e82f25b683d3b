//! `cairn-bench node`: shard PUT and GET throughput against a real node over loopback QUIC,
//! beside a plain TCP copy of the same bytes in the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cairn_client::node::NodeClient;
use cairn_erasure::ShardRoot;
use cairn_node::config::NodeConfig;
use cairn_proto::bytesize::ByteSize;
use cairn_proto::identity::SecretKey;
use cairn_proto::ids::ShardId;
use cairn_proto::order::{Action, Order, SignedOrder, unix_now};
use cairn_proto::transport::client_endpoint;
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::measure::pseudo_random;

/// Options of `cairn-bench node`.
#[derive(Args)]
pub struct NodeBenchArgs {
    /// Size of each shard.
    #[arg(long, default_value = "4MiB")]
    shard_size: ByteSize,
    /// Bytes moved in each phase (PUT, GET, TCP).
    #[arg(long, default_value = "512MiB")]
    total: ByteSize,
    /// Requests (and TCP connections) in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Where the node keeps its data [default: a fresh directory under the system temp dir].
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

pub fn run(args: NodeBenchArgs) -> anyhow::Result<()> {
    let shard_size = usize::try_from(args.shard_size.0).context("--shard-size too large")?;
    anyhow::ensure!(shard_size > 0, "--shard-size must be at least one byte");
    let count = (args.total.0 / args.shard_size.0).max(1);
    let total = count * args.shard_size.0;
    let concurrency = args.concurrency.max(1);
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("cairn-bench-node-{}", std::process::id())),
    };
    let cleanup = args.dir.is_none();
    println!(
        "cairn-bench node: {count} shards of {} ({} per phase), {concurrency} in flight, data in {}",
        args.shard_size,
        ByteSize(total),
        dir.display()
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(measure(dir.clone(), shard_size, count, concurrency));
    if cleanup {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (put, get, tcp) = result?;
    let mib = |elapsed: Duration| total as f64 / (1 << 20) as f64 / elapsed.as_secs_f64().max(1e-9);
    let (put, get, tcp) = (mib(put), mib(get), mib(tcp));
    println!("{:<34} {:>10}", "phase", "MiB/s");
    println!("{:<34} {put:>10.1}", "QUIC PutShard (verified, fsynced)");
    println!("{:<34} {get:>10.1}", "QUIC GetShard (proof verified)");
    println!("{:<34} {tcp:>10.1}", "plain TCP copy");
    println!(
        "PUT / TCP = {:.2}, GET / TCP = {:.2} (target at least 0.5)",
        put / tcp,
        get / tcp
    );
    let json = serde_json::json!({
        "shard_bytes": shard_size,
        "shards": count,
        "concurrency": concurrency,
        "put_mib_s": (put * 10.0).round() / 10.0,
        "get_mib_s": (get * 10.0).round() / 10.0,
        "tcp_mib_s": (tcp * 10.0).round() / 10.0,
        "put_over_tcp": (put / tcp * 1000.0).round() / 1000.0,
        "get_over_tcp": (get / tcp * 1000.0).round() / 1000.0,
    });
    println!("{json}");
    Ok(())
}

/// Runs the three phases; returns their durations.
async fn measure(
    dir: std::path::PathBuf,
    shard_size: usize,
    count: u64,
    concurrency: usize,
) -> anyhow::Result<(Duration, Duration, Duration)> {
    let coordinator = SecretKey::generate();
    let gateway = SecretKey::generate();
    let config = NodeConfig {
        data_dir: dir,
        listen: "127.0.0.1:0".parse()?,
        coordinator_key: Some(coordinator.public()),
        capacity: ByteSize(count * shard_size as u64 * 2 + (64 << 20)),
        scrub_rate: ByteSize(0),
        max_shard_size: ByteSize(shard_size as u64),
        ..NodeConfig::default()
    };
    let node = cairn_node::daemon::start(config).await?;
    let endpoint = client_endpoint("127.0.0.1:0".parse()?, &gateway)?;
    let client = Arc::new(NodeClient::new(
        endpoint,
        gateway.clone(),
        node.quic_addr,
        node.id,
    ));
    let data = Arc::new(pseudo_random(shard_size, 42));
    let root = ShardRoot::of(&data);
    let size = shard_size as u64;
    let serial = Arc::new(AtomicU64::new(1));
    let order = {
        let (serial, gateway) = (serial.clone(), gateway.public());
        let node = node.id;
        Arc::new(move |action: Action| {
            SignedOrder::sign(
                Order {
                    node,
                    client: gateway,
                    serial: serial.fetch_add(1, Ordering::Relaxed),
                    expires_at: unix_now() + 600,
                    action,
                },
                &coordinator,
            )
        })
    };
    let id = |n: u64| {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&n.to_be_bytes());
        ShardId(id)
    };

    let put = run_parallel(count, concurrency, {
        let (client, data, order) = (client.clone(), data.clone(), order.clone());
        move |n| {
            let (client, data, order) = (client.clone(), data.clone(), order.clone());
            async move {
                let put = order(Action::Put {
                    shard: id(n),
                    root,
                    size,
                });
                client.put_shard(&put, &data).await.map(|_| ())
            }
        }
    })
    .await?;
    let get = run_parallel(count, concurrency, {
        let (client, data, order) = (client.clone(), data.clone(), order.clone());
        move |n| {
            let (client, data, order) = (client.clone(), data.clone(), order.clone());
            async move {
                let get = order(Action::Get {
                    shard: id(n),
                    root,
                    size,
                });
                let bytes = client.get_shard(&get, None).await?;
                if bytes != *data {
                    return Err(cairn_client::node::ClientError::Protocol(
                        "bytes differ".into(),
                    ));
                }
                Ok(())
            }
        }
    })
    .await?;
    node.shutdown().await;
    let tcp = tcp_copy(&data, count, concurrency).await?;
    Ok((put, get, tcp))
}

/// Runs `work(n)` for n in 0..count with `concurrency` in flight; returns the wall time.
async fn run_parallel<F, Fut, E>(
    count: u64,
    concurrency: usize,
    work: F,
) -> anyhow::Result<Duration>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), E>> + Send,
    E: std::error::Error + Send + Sync + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let work = Arc::new(work);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (next, work) = (next.clone(), work.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return anyhow::Ok(());
                }
                work(n).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed())
}

/// Copies `count × data` over loopback TCP on `concurrency` connections, each acknowledged
/// by the receiver once it has read everything; returns the wall time.
async fn tcp_copy(data: &Arc<Vec<u8>>, count: u64, concurrency: usize) -> anyhow::Result<Duration> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let receiver = tokio::spawn(async move {
        let mut sinks = Vec::new();
        for _ in 0..concurrency {
            let (mut stream, _) = listener.accept().await?;
            sinks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 1 << 20];
                while stream.read(&mut buf).await? > 0 {}
                stream.write_all(b"k").await
            }));
        }
        for sink in sinks {
            sink.await??;
        }
        anyhow::Ok(())
    });
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for _ in 0..concurrency {
        let (next, data) = (next.clone(), data.clone());
        senders.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            while next.fetch_add(1, Ordering::Relaxed) < count {
                stream.write_all(&data).await?;
            }
            stream.shutdown().await?;
            let mut ack = [0u8; 1];
            stream.read_exact(&mut ack).await?;
            anyhow::Ok(())
        }));
    }
    for sender in senders {
        sender.await??;
    }
    let elapsed = started.elapsed();
    receiver.await??;
    Ok(elapsed)
}
