//! Loopback ports for test processes that must come back on the same address after a kill.
//!
//! A port the kernel hands out for `:0` lies in its ephemeral range, the range every outgoing
//! TCP connection and every client socket bound to `:0` (QUIC endpoints, relays) also draws
//! from. A process killed and restarted on such a port may find it taken by one of those in
//! the seconds it was down, and exit on "address in use". Ports here come from below that
//! range, where only listeners that asked for a port by number go, and one test process
//! never hands out the same port twice.

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out: clear of the well-known and common service ports.
const LOWEST: u32 = 10_000;

/// Where the kernel's ephemeral range starts when it cannot be read.
const EPHEMERAL_DEFAULT: u32 = 32_768;

/// Ports handed out so far in this process, from a start that differs per process so that
/// test binaries running side by side rarely probe the same ports.
static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// The first port of the kernel's ephemeral range (Linux reads it from procfs).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .filter(|start| *start > LOWEST + 1_000)
        .unwrap_or(EPHEMERAL_DEFAULT)
}

fn free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
        && UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// The first of `count` consecutive loopback ports, each free for TCP and UDP when probed,
/// below the ephemeral range and not handed out before by this process.
pub fn reserve(count: u16) -> std::io::Result<u16> {
    let count = u32::from(count.max(1));
    let top = ephemeral_start();
    let span = top - LOWEST;
    if NEXT.load(Ordering::Relaxed) == u32::MAX {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let seed = (nanos ^ std::process::id().wrapping_mul(2_654_435_761)) % span;
        let _ = NEXT.compare_exchange(u32::MAX, seed, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..span / count {
        let offset = NEXT.fetch_add(count, Ordering::Relaxed) % span;
        let base = LOWEST + offset;
        if base + count > top {
            continue;
        }
        // Every candidate is below `top`, itself at most 65 535.
        let ports = (base..base + count).filter_map(|p| u16::try_from(p).ok());
        if ports.clone().count() == count as usize && ports.clone().all(free) {
            return u16::try_from(base).map_err(std::io::Error::other);
        }
    }
    Err(std::io::Error::other(format!(
        "no {count} consecutive free loopback ports between {LOWEST} and {top}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_and_never_handed_out_twice() {
        let top = ephemeral_start();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let base = reserve(3).expect("free ports");
            for port in base..base + 3 {
                assert!(u32::from(port) >= LOWEST && u32::from(port) < top);
                assert!(seen.insert(port), "port {port} handed out twice");
            }
        }
    }
}
