//! [`LossyLink`]: a UDP relay that delays and drops datagrams, put in front of a node's QUIC
//! port to play a volunteer's bad uplink.
//!
//! Clients send to the relay's address (the one the node advertises); the relay forwards
//! each datagram to the node from an upstream socket of its own per client address, so the
//! node sees one peer per client and its replies go back to the right client. In each
//! direction every datagram is dropped with the configured probability, and the others are
//! sent after the configured delay (plus up to the jitter). Sends are scheduled on their own
//! tasks, so a delay never holds up the datagrams behind it.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

/// Largest datagram relayed (the UDP maximum).
const MAX_DATAGRAM: usize = 65_535;

/// How bad the link is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// Least time each datagram spends in the relay, each way.
    pub delay: Duration,
    /// Up to this much more, chosen at random per datagram (so datagrams may reorder).
    pub jitter: Duration,
    /// Percentage (0 to 100) of datagrams dropped, independently in each direction.
    pub drop_percent: f64,
    /// Seed of the random choices, for a reproducible run; `None` seeds from the OS.
    pub seed: Option<u64>,
}

impl LinkConfig {
    /// A link that delays by `delay` and drops `drop_percent` % of datagrams each way.
    pub fn new(delay: Duration, drop_percent: f64) -> Self {
        Self {
            delay,
            jitter: Duration::ZERO,
            drop_percent,
            seed: None,
        }
    }

    /// Whether this link changes anything at all.
    pub fn is_perfect(&self) -> bool {
        self.delay.is_zero() && self.jitter.is_zero() && self.drop_percent <= 0.0
    }

    fn validate(&self) -> io::Result<()> {
        if !(0.0..=100.0).contains(&self.drop_percent) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "drop percentage {} is not between 0 and 100",
                    self.drop_percent
                ),
            ));
        }
        Ok(())
    }
}

/// Datagrams counted in one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionCounts {
    /// Datagrams the relay received in this direction.
    pub received: u64,
    /// Of those, how many it dropped on purpose (the others were scheduled for sending).
    pub dropped: u64,
}

/// What the link has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounts {
    /// Client → node.
    pub to_node: DirectionCounts,
    /// Node → client.
    pub to_client: DirectionCounts,
}

#[derive(Default)]
struct Counters {
    to_node_received: AtomicU64,
    to_node_dropped: AtomicU64,
    to_client_received: AtomicU64,
    to_client_dropped: AtomicU64,
    /// Woken whenever a count changes, for [`LossyLink::wait_until`].
    changed: Notify,
}

impl Counters {
    /// Counts one datagram (and its drop, if dropped) and wakes whoever waits on counts.
    ///
    /// The drop is counted first: whoever sees a datagram received sees its drop too.
    fn count(&self, received: &AtomicU64, dropped: Option<&AtomicU64>) {
        if let Some(dropped) = dropped {
            dropped.fetch_add(1, Ordering::SeqCst);
        }
        received.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

/// A running relay; stops when dropped.
pub struct LossyLink {
    addr: SocketAddr,
    upstream: SocketAddr,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl LossyLink {
    /// Binds `listen` and relays every datagram arriving there to `upstream` (and the
    /// answers back) over a link as bad as `config`.
    pub async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        config: LinkConfig,
    ) -> io::Result<Self> {
        let socket = UdpSocket::bind(listen).await?;
        Self::with_socket(socket, upstream, config)
    }

    /// Like [`LossyLink::start`] on a socket the caller bound already: a caller that must
    /// announce the relay's address before the upstream exists (a node advertising it while
    /// it starts) binds first and learns the address from the socket.
    pub fn with_socket(
        socket: UdpSocket,
        upstream: SocketAddr,
        config: LinkConfig,
    ) -> io::Result<Self> {
        config.validate()?;
        let addr = socket.local_addr()?;
        let counters = Arc::new(Counters::default());
        let chance = Arc::new(Mutex::new(Chance::new(config)));
        let task = tokio::spawn(relay(Arc::new(socket), upstream, chance, counters.clone()));
        Ok(Self {
            addr,
            upstream,
            counters,
            task,
        })
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address datagrams are relayed to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Datagrams received and dropped so far, per direction.
    pub fn counts(&self) -> LinkCounts {
        let c = &self.counters;
        LinkCounts {
            to_node: DirectionCounts {
                received: c.to_node_received.load(Ordering::SeqCst),
                dropped: c.to_node_dropped.load(Ordering::SeqCst),
            },
            to_client: DirectionCounts {
                received: c.to_client_received.load(Ordering::SeqCst),
                dropped: c.to_client_dropped.load(Ordering::SeqCst),
            },
        }
    }

    /// Returns once `done` holds for the counts: a test that paces its datagrams by the
    /// relay, or knows how many must arrive, waits on this instead of sleeping.
    pub async fn wait_until(&self, mut done: impl FnMut(&LinkCounts) -> bool) {
        loop {
            // Registered before the check, so a change between the two is not missed.
            let changed = self.counters.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if done(&self.counts()) {
                return;
            }
            changed.await;
        }
    }
}

impl Drop for LossyLink {
    fn drop(&mut self) {
        // Aborting the relay drops its JoinSet, which aborts the per-client return tasks.
        self.task.abort();
    }
}

/// The relay loop: client datagrams in, each to its client's upstream socket.
async fn relay(
    front: Arc<UdpSocket>,
    upstream: SocketAddr,
    chance: Arc<Mutex<Chance>>,
    counters: Arc<Counters>,
) {
    let mut peers: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut returns = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, client) = match front.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(err) => {
                // An ICMP error for an earlier send surfaces here; the socket still works.
                tracing::debug!(%err, "relay receive failed");
                continue;
            }
        };
        let socket = match peers.get(&client) {
            Some(socket) => socket.clone(),
            None => match open_upstream(upstream).await {
                Ok(socket) => {
                    let socket = Arc::new(socket);
                    returns.spawn(relay_back(
                        socket.clone(),
                        front.clone(),
                        client,
                        chance.clone(),
                        counters.clone(),
                    ));
                    peers.insert(client, socket.clone());
                    socket
                }
                Err(err) => {
                    tracing::warn!(%client, %err, "relay cannot open an upstream socket");
                    continue;
                }
            },
        };
        let decision = decide(&chance);
        let dropped = decision.is_none().then_some(&counters.to_node_dropped);
        counters.count(&counters.to_node_received, dropped);
        let Some(delay) = decision else {
            continue;
        };
        let datagram = buf[..len].to_vec();
        schedule(delay, async move {
            let _ = socket.send(&datagram).await;
        });
    }
}

/// Node datagrams on one client's upstream socket, back to that client.
async fn relay_back(
    upstream: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    chance: Arc<Mutex<Chance>>,
    counters: Arc<Counters>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let len = match upstream.recv(&mut buf).await {
            Ok(len) => len,
            Err(err) => {
                // "Connection refused" while the node is down or restarting: keep relaying,
                // but do not spin on a socket that keeps failing.
                tracing::debug!(%client, %err, "relay upstream receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let decision = decide(&chance);
        let dropped = decision.is_none().then_some(&counters.to_client_dropped);
        counters.count(&counters.to_client_received, dropped);
        let Some(delay) = decision else {
            continue;
        };
        let datagram = buf[..len].to_vec();
        let front = front.clone();
        schedule(delay, async move {
            let _ = front.send_to(&datagram, client).await;
        });
    }
}

/// An upstream socket for one client, connected to the node so only its answers arrive.
async fn open_upstream(upstream: SocketAddr) -> io::Result<UdpSocket> {
    let any = match upstream.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let socket = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
    socket.connect(upstream).await?;
    Ok(socket)
}

/// Runs `send` now, or on its own task after `delay` so the relay loop keeps going.
fn schedule(delay: Duration, send: impl Future<Output = ()> + Send + 'static) {
    tokio::spawn(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        send.await;
    });
}

/// `None` to drop the datagram, else how long to hold it.
fn decide(chance: &Mutex<Chance>) -> Option<Duration> {
    // A poisoned lock only means another relay task panicked mid-draw; the state is a
    // plain number and still usable.
    let mut chance = chance.lock().unwrap_or_else(|poison| poison.into_inner());
    chance.decide()
}

/// The link's random choices: a small xorshift generator, good enough to spread drops and
/// jitter, and seedable for reproducible runs.
struct Chance {
    state: u64,
    config: LinkConfig,
}

impl Chance {
    fn new(config: LinkConfig) -> Self {
        let seed = config.seed.unwrap_or_else(|| {
            use std::hash::{BuildHasher, RandomState};
            RandomState::new().hash_one(std::time::SystemTime::now())
        });
        // Xorshift must not start at zero.
        Self {
            state: seed | 1,
            config,
        }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A uniform draw in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn decide(&mut self) -> Option<Duration> {
        if self.unit() * 100.0 < self.config.drop_percent {
            return None;
        }
        let jitter = self.config.jitter.mul_f64(self.unit());
        Some(self.config.delay + jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_the_configured_share_and_delays_within_bounds() {
        let config = LinkConfig {
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(5),
            drop_percent: 25.0,
            seed: Some(7),
        };
        let mut chance = Chance::new(config);
        let draws: Vec<_> = (0..10_000).map(|_| chance.decide()).collect();
        let dropped = draws.iter().filter(|d| d.is_none()).count();
        assert!(
            (2_200..2_800).contains(&dropped),
            "dropped {dropped} of 10000"
        );
        for delay in draws.into_iter().flatten() {
            assert!(delay >= Duration::from_millis(10) && delay <= Duration::from_millis(15));
        }
    }

    #[test]
    fn refuses_impossible_percentages() {
        assert!(LinkConfig::new(Duration::ZERO, 101.0).validate().is_err());
        assert!(LinkConfig::new(Duration::ZERO, -1.0).validate().is_err());
        assert!(LinkConfig::new(Duration::ZERO, 100.0).validate().is_ok());
    }
}
