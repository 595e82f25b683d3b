//! Who a request comes from, and how many anonymous requests (and requests signed with
//! unknown keys or failing their signature) each client may make: a token bucket per
//! client address, in a map of bounded size.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Instant;

use http::HeaderMap;
use prometheus::IntCounter;

use crate::config::Network;

/// Clients whose buckets are remembered at most (in two generations of half as many each):
/// a flood of addresses turns the oldest over instead of growing memory. A client forgotten
/// starts again with a full bucket, which is what a client unheard from for a while has.
pub const MAX_TRACKED_CLIENTS: usize = 65_536;

/// The address a request counts for, as the gateway learned it (see [`client_address`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// The client an address counts for: an IPv4 address itself, an IPv6 address's /64 (one
/// host is usually given a whole /64, so counting single IPv6 addresses would cap nothing).
pub(crate) fn client_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// The address a request comes from: the connection's `peer`, unless `peer` is a trusted
/// proxy; then the nearest address in `X-Forwarded-For` (read from the right, as each
/// proxy appends the address it heard from) that is not a trusted proxy itself. An entry
/// that is not an address ends the walk at the proxy that wrote it.
pub(crate) fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[Network]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer.to_canonical();
    if !is_trusted(client) {
        return client;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            return client;
        };
        client = ip.to_canonical();
        if !is_trusted(client) {
            return client;
        }
    }
    client
}

/// A token bucket per client for anonymous requests: `rate` a second on average, `burst`
/// at once.
pub struct Throttle {
    rate: f64,
    burst: f64,
    capacity: usize,
    buckets: Mutex<Generations>,
    throttled: IntCounter,
}

#[derive(Default)]
struct Generations {
    current: HashMap<IpAddr, Bucket>,
    previous: HashMap<IpAddr, Bucket>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Throttle {
    /// `rate` requests a second per client (0: unlimited), `burst` at once; each refusal
    /// counted in `throttled`.
    pub fn new(rate: u32, burst: u32, throttled: IntCounter) -> Self {
        Self::with_capacity(rate, burst, MAX_TRACKED_CLIENTS, throttled)
    }

    fn with_capacity(rate: u32, burst: u32, capacity: usize, throttled: IntCounter) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            capacity: capacity.max(2),
            buckets: Mutex::new(Generations::default()),
            throttled,
        }
    }

    /// Takes one token from `ip`'s client; `false` (and counted) if its bucket is empty.
    pub fn allow(&self, ip: IpAddr) -> bool {
        self.allow_at(ip, Instant::now())
    }

    /// Takes one token from `ip`'s client for a request already answered (a failed
    /// signature); not counted as a refusal.
    pub fn charge(&self, ip: IpAddr) {
        self.take(ip, Instant::now());
    }

    /// Gives back a token taken for a request that turned out to be signed with a real key.
    pub fn refund(&self, ip: IpAddr) {
        if self.rate <= 0.0 {
            return;
        }
        let client = client_of(ip);
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(bucket) = buckets.current.get_mut(&client) {
            bucket.tokens = (bucket.tokens + 1.0).min(self.burst);
        }
    }

    fn allow_at(&self, ip: IpAddr, now: Instant) -> bool {
        let allowed = self.take(ip, now);
        if !allowed {
            self.throttled.inc();
        }
        allowed
    }

    fn take(&self, ip: IpAddr, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let client = client_of(ip);
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let known = match buckets.current.get(&client) {
            Some(bucket) => Some(*bucket),
            None => buckets.previous.remove(&client),
        };
        let mut bucket = known.unwrap_or(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.at = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        if !buckets.current.contains_key(&client) && buckets.current.len() >= self.capacity / 2 {
            buckets.previous = std::mem::take(&mut buckets.current);
        }
        buckets.current.insert(client, bucket);
        allowed
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        let buckets = self.buckets.lock().unwrap();
        buckets.current.len() + buckets.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn counter() -> IntCounter {
        IntCounter::new("t", "t").unwrap()
    }

    #[test]
    fn a_client_gets_its_burst_then_its_rate_and_others_are_unaffected() {
        let throttled = counter();
        let throttle = Throttle::new(2, 3, throttled.clone());
        let start = Instant::now();
        for _ in 0..3 {
            assert!(throttle.allow_at(ip("192.0.2.1"), start));
        }
        assert!(!throttle.allow_at(ip("192.0.2.1"), start));
        assert!(throttle.allow_at(ip("192.0.2.2"), start));
        // Two tokens a second: one more after half a second, not two.
        let later = start + Duration::from_millis(500);
        assert!(throttle.allow_at(ip("192.0.2.1"), later));
        assert!(!throttle.allow_at(ip("192.0.2.1"), later));
        // An IPv6 /64 is one client.
        for _ in 0..3 {
            assert!(throttle.allow_at(ip("2001:db8::1"), start));
        }
        assert!(!throttle.allow_at(ip("2001:db8::ffff"), start));
        assert_eq!(throttled.get(), 3);
        let unlimited = Throttle::new(0, 1, counter());
        assert!((0..1000).all(|_| unlimited.allow_at(ip("192.0.2.1"), start)));
    }

    #[test]
    fn a_flood_of_addresses_stays_within_the_map_s_bound() {
        let throttle = Throttle::with_capacity(1, 1, 1000, counter());
        let now = Instant::now();
        assert!(throttle.allow_at(ip("198.51.100.1"), now));
        for n in 0..100_000u32 {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            throttle.allow_at(addr, now);
            assert!(throttle.tracked() <= 1000);
        }
        // A client seen recently is kept across a turn-over while it keeps coming.
        let throttle = Throttle::with_capacity(1, 1, 10, counter());
        assert!(throttle.allow_at(ip("198.51.100.1"), now));
        for n in 0..100u32 {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            throttle.allow_at(addr, now);
            if n % 3 == 0 {
                assert!(!throttle.allow_at(ip("198.51.100.1"), now), "after {n}");
            }
        }
    }

    #[test]
    fn x_forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<Network> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", "203.0.113.9, 10.0.0.5".parse().unwrap());
        // From a stranger: its own address, whatever it claims.
        assert_eq!(
            client_address(ip("198.51.100.7"), &headers, &trusted),
            ip("198.51.100.7")
        );
        // Through two trusted proxies: the first address that is not one.
        assert_eq!(
            client_address(ip("10.0.0.1"), &headers, &trusted),
            ip("203.0.113.9")
        );
        // A client cannot hide behind a forged leftmost entry: the rightmost untrusted
        // address is the one a trusted proxy heard from.
        let mut forged = HeaderMap::new();
        forged.append("x-forwarded-for", "10.9.9.9".parse().unwrap());
        forged.append("x-forwarded-for", "192.0.2.50".parse().unwrap());
        assert_eq!(
            client_address(ip("10.0.0.1"), &forged, &trusted),
            ip("192.0.2.50")
        );
        let mut junk = HeaderMap::new();
        junk.append("x-forwarded-for", "nonsense".parse().unwrap());
        assert_eq!(
            client_address(ip("10.0.0.1"), &junk, &trusted),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), &HeaderMap::new(), &[]),
            ip("10.0.0.1")
        );
    }
}
