//! [`PartitionRelay`]: a UDP relay in front of a coordinator member's QUIC port that drops
//! every datagram from and to chosen peers on demand, to cut a member off from the others
//! while everything else still reaches it.
//!
//! Members register the relay's address (`--advertise`, `members add --addr`), so their
//! Raft traffic to each other passes through relays, while gateways and nodes may dial the
//! member's own port directly. A member's outgoing Raft connections leave from its own
//! QUIC port (one endpoint serves and dials), so the address a relay sees for a member is
//! that member's real QUIC address: blocking it there, and blocking every other member in
//! the cut-off member's own relay, partitions it both ways.
//!
//! Like [`LossyLink`](crate::lossy_link::LossyLink), the relay forwards each client's
//! datagrams from an upstream socket of its own, so the member sees one peer per client and
//! its answers go back to the right one.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::{JoinHandle, JoinSet};

/// Largest datagram relayed (the UDP maximum).
const MAX_DATAGRAM: usize = 65_535;

#[derive(Default)]
struct Shared {
    /// Client addresses whose datagrams are dropped both ways.
    blocked: RwLock<HashSet<SocketAddr>>,
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

impl Shared {
    fn is_blocked(&self, client: &SocketAddr) -> bool {
        // The set is only ever replaced whole; a poisoned lock still holds a valid one.
        self.blocked
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .contains(client)
    }

    /// Counts the datagram and says whether to forward it.
    fn pass(&self, client: &SocketAddr) -> bool {
        if self.is_blocked(client) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            false
        } else {
            self.forwarded.fetch_add(1, Ordering::Relaxed);
            true
        }
    }
}

/// A running relay; stops when dropped.
pub struct PartitionRelay {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl PartitionRelay {
    /// Binds `listen` and relays every datagram arriving there to `upstream` and back.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> io::Result<Self> {
        let socket = UdpSocket::bind(listen).await?;
        let addr = socket.local_addr()?;
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(relay(Arc::new(socket), upstream, shared.clone()));
        Ok(Self {
            addr,
            upstream,
            shared,
            task,
        })
    }

    /// The address peers send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address datagrams are relayed to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Drops, from now on, every datagram from and to each of `peers`.
    pub fn block(&self, peers: impl IntoIterator<Item = SocketAddr>) {
        let mut blocked = self
            .shared
            .blocked
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        blocked.extend(peers);
    }

    /// Relays everything again.
    pub fn heal(&self) {
        self.shared
            .blocked
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .clear();
    }

    /// Datagrams forwarded and dropped so far (both ways).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.shared.forwarded.load(Ordering::Relaxed),
            self.shared.dropped.load(Ordering::Relaxed),
        )
    }
}

impl Drop for PartitionRelay {
    fn drop(&mut self) {
        // Aborting the relay drops its JoinSet, which aborts the per-client return tasks.
        self.task.abort();
    }
}

async fn relay(front: Arc<UdpSocket>, upstream: SocketAddr, shared: Arc<Shared>) {
    let mut peers: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut returns = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, client) = match front.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(err) => {
                // An ICMP error for an earlier send surfaces here; the socket still works.
                tracing::debug!(%err, "partition relay receive failed");
                continue;
            }
        };
        if !shared.pass(&client) {
            continue;
        }
        let socket = match peers.get(&client) {
            Some(socket) => socket.clone(),
            None => match open_upstream(upstream).await {
                Ok(socket) => {
                    let socket = Arc::new(socket);
                    returns.spawn(relay_back(
                        socket.clone(),
                        front.clone(),
                        client,
                        shared.clone(),
                    ));
                    peers.insert(client, socket.clone());
                    socket
                }
                Err(err) => {
                    tracing::warn!(%client, %err, "partition relay cannot open an upstream socket");
                    continue;
                }
            },
        };
        // Loopback sends do not block for long; sending inline keeps datagrams in order.
        let _ = socket.send(&buf[..len]).await;
    }
}

async fn relay_back(
    upstream: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let len = match upstream.recv(&mut buf).await {
            Ok(len) => len,
            Err(err) => {
                // "Connection refused" while the member is down or restarting: keep
                // relaying, but do not spin on a socket that keeps failing.
                tracing::debug!(%client, %err, "partition relay upstream receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if shared.pass(&client) {
            let _ = front.send_to(&buf[..len], client).await;
        }
    }
}

/// An upstream socket for one client, connected to the member so only its answers arrive.
async fn open_upstream(upstream: SocketAddr) -> io::Result<UdpSocket> {
    let any = match upstream.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let socket = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
    socket.connect(upstream).await?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answered(socket: &UdpSocket) -> bool {
        let mut buf = [0u8; 16];
        tokio::time::timeout(Duration::from_millis(300), socket.recv(&mut buf))
            .await
            .is_ok()
    }

    /// An echo server, a relay in front of it, and two clients: the blocked one hears
    /// nothing back while the other is answered; after healing both are.
    #[tokio::test]
    async fn blocks_chosen_peers_both_ways_and_heals() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((len, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..len], from).await;
            }
        });
        let relay = PartitionRelay::start("127.0.0.1:0".parse().unwrap(), echo_addr)
            .await
            .unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        a.connect(relay.local_addr()).await.unwrap();
        b.connect(relay.local_addr()).await.unwrap();
        a.send(b"ping").await.unwrap();
        assert!(answered(&a).await);
        relay.block([a.local_addr().unwrap()]);
        a.send(b"ping").await.unwrap();
        b.send(b"ping").await.unwrap();
        assert!(!answered(&a).await, "a blocked peer was answered");
        assert!(answered(&b).await, "an unblocked peer was not answered");
        assert!(relay.counts().1 >= 1);
        relay.heal();
        a.send(b"ping").await.unwrap();
        assert!(answered(&a).await, "not answered after healing");
    }
}
