//! [`GatewayConfig`]: what an operator sets for one gateway.

use std::net::SocketAddr;
use std::path::PathBuf;

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
        self.coordinator_key
            .trim()
            .parse()
            .map_err(|err| format!("coordinator_key: {err}"))
    }
}
