//! [`GatewayConfig`]: what an operator sets for one gateway.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use cairn_proto::identity::PublicKey;
use serde::{Deserialize, Serialize};

/// One gateway's configuration (TOML; every field is also a flag of `cairn gateway`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Holds the gateway's identity key (`gateway.key`); nothing else is stored.
    pub data_dir: PathBuf,
    /// HTTP address of the S3 API (also `/metrics` and `/health`).
    pub listen: SocketAddr,
    /// QUIC addresses (`host:port`) of the coordinator members.
    pub coordinators: Vec<String>,
    /// The coordinator's public key (printed by `cairn coordinator`, shown in `cairn admin
    /// status`).
    pub coordinator_key: String,
    /// Domain for virtual-host addressing (`<bucket>.<domain>`); path-style always works.
    pub domain: Option<String>,
    /// Bodies up to this many bytes are kept in the catalog instead of on nodes.
    pub inline_threshold: usize,
    /// Repair jobs this gateway does at once for the coordinator (each holds about three
    /// segments in memory); 0 leaves repair to other gateways.
    pub repair_workers: usize,
    /// How long a client may take to send a request head, counted from the accept or from
    /// the end of the previous answer: so also how long a connection (HTTP/1 or HTTP/2) may
    /// stay with no request in progress before it is closed.
    pub header_timeout_ms: u64,
    /// How long a request body may go without a byte arriving while the gateway waits for
    /// one; then the request is answered `400 RequestTimeout`, the connection closed and
    /// nothing stored.
    pub body_idle_timeout_ms: u64,
    /// How long writing an answer may make no progress (the client reads nothing) before
    /// the connection is closed and what the answer held (a read's buffers) let go.
    pub send_stall_timeout_ms: u64,
    /// Anonymous requests one client address (an IPv4 address or an IPv6 /64) may make per
    /// second, on average; past it they are answered `503 SlowDown`. 0: no limit. Requests
    /// signed with an access key the coordinator does not know, and requests whose
    /// signature fails, count as anonymous; requests signed with a real key are never
    /// limited by it.
    pub anonymous_rate: u32,
    /// Anonymous requests one client address may make at once before the rate applies.
    pub anonymous_burst: u32,
    /// Proxies (addresses, or networks as `address/prefix`) in front of the gateway, such as
    /// a CDN's or a load balancer's: for a connection from one of them, the client is the
    /// last address in `X-Forwarded-For` that is not itself a trusted proxy. From anyone
    /// else `X-Forwarded-For` is ignored and the client is the connection's address.
    pub trusted_proxies: Vec<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("cairn-gateway"),
            listen: SocketAddr::from(([0, 0, 0, 0], 7400)),
            coordinators: Vec::new(),
            coordinator_key: String::new(),
            domain: None,
            inline_threshold: 4096,
            repair_workers: 1,
            header_timeout_ms: 10_000,
            body_idle_timeout_ms: 60_000,
            send_stall_timeout_ms: 60_000,
            anonymous_rate: 20,
            anonymous_burst: 100,
            trusted_proxies: Vec::new(),
        }
    }
}

impl GatewayConfig {
    /// Checks what defaults cannot fix and returns the coordinator key.
    pub fn validate(&self) -> Result<PublicKey, String> {
        if self.coordinators.is_empty() {
            return Err("coordinators: at least one coordinator address is needed".into());
        }
        if self.inline_threshold > 64 << 10 {
            return Err("inline_threshold: at most 64 KiB (the coordinator's limit)".into());
        }
        if self.header_timeout_ms == 0
            || self.body_idle_timeout_ms == 0
            || self.send_stall_timeout_ms == 0
        {
            return Err(
                "header_timeout_ms, body_idle_timeout_ms, send_stall_timeout_ms: must be above 0"
                    .into(),
            );
        }
        if self.anonymous_rate > 0 && self.anonymous_burst == 0 {
            return Err("anonymous_burst: at least 1 when anonymous_rate is set".into());
        }
        self.proxies()?;
        self.coordinator_key
            .trim()
            .parse()
            .map_err(|err| format!("coordinator_key: {err}"))
    }

    /// [`GatewayConfig::trusted_proxies`], parsed.
    pub fn proxies(&self) -> Result<Vec<Network>, String> {
        self.trusted_proxies
            .iter()
            .map(|text| {
                text.parse()
                    .map_err(|err| format!("trusted_proxies: {text}: {err}"))
            })
            .collect()
    }
}

/// An address, or a network as `address/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    base: IpAddr,
    prefix: u8,
}

impl Network {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as its IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, ip.to_canonical()) {
            (IpAddr::V4(base), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(base) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(base), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(base) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let base = addr
            .parse::<IpAddr>()
            .map_err(|_| "not an IP address".to_string())?
            .to_canonical();
        let bits = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("the prefix must be 0 to {bits}"))?,
        };
        Ok(Network { base, prefix })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses_only() {
        let net: Network = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.1".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(!net.contains("2001:db8::1".parse().unwrap()));
        let one: Network = "192.0.2.7".parse().unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        let v6: Network = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        for bad in ["10.0.0.0/33", "proxy.example.org", "10.0.0.0/x", "::/129"] {
            assert!(bad.parse::<Network>().is_err(), "{bad}");
        }
    }
}
