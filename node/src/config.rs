//! [`NodeConfig`]: everything a node operator sets, from a TOML file and flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cairn_proto::bytesize::ByteSize;
use cairn_proto::identity::PublicKey;
use serde::{Deserialize, Serialize};

/// A node's configuration. Every field has a default except the coordinator's key, without
/// which the node cannot tell a real order from a forged one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Where shards, the index and the identity key live.
    pub data_dir: PathBuf,
    /// QUIC address to serve shard requests on.
    pub listen: SocketAddr,
    /// Address gateways should dial, as told to the coordinator (defaults to `listen`).
    pub advertise: Option<String>,
    /// Coordinator addresses that receive heartbeats (every member: only the leader takes them, and the node tries each in turn until one does).
    pub coordinators: Vec<SocketAddr>,
    /// The coordinator's public key: only orders it signed are obeyed.
    #[serde(with = "as_text", skip_serializing_if = "Option::is_none")]
    pub coordinator_key: Option<PublicKey>,
    /// Disk space offered to the cluster for shard bytes.
    pub capacity: ByteSize,
    /// Cap on bytes per second sent (shard reads, audits); 0 means no cap.
    pub upload_limit: ByteSize,
    /// Cap on bytes per second received (shard writes); 0 means no cap.
    pub download_limit: ByteSize,
    /// Organisation running the node (a failure domain for placement).
    pub org: String,
    /// Site or region of the node (a wider failure domain).
    pub site: String,
    /// HTTP address for Prometheus metrics at `/metrics` and the status page at `/`; none
    /// disables both.
    pub metrics_listen: Option<SocketAddr>,
    /// Milliseconds between heartbeats to the coordinator.
    pub heartbeat_interval_ms: u64,
    /// Bytes per second the background scrub re-reads and re-hashes; 0 disables it.
    pub scrub_rate: ByteSize,
    /// Milliseconds the scrub rests after each full pass over the store.
    pub scrub_pause_ms: u64,
    /// Largest shard accepted, bounding the memory of one upload.
    pub max_shard_size: ByteSize,
    /// Uploads handled at once; with `max_shard_size` this bounds upload memory.
    pub max_concurrent_puts: usize,
    /// How long an answer may wait for a reader that stopped reading (its flow-control
    /// window full) before the stream is reset and the shard's buffer let go.
    pub send_stall_timeout_ms: u64,
    /// Join token from `cairn admin invite`: supplies the coordinators and their key, and
    /// registers the node on its first start.
    pub join: Option<String>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("cairn-node"),
            listen: SocketAddr::from(([0, 0, 0, 0], 7400)),
            advertise: None,
            coordinators: Vec::new(),
            coordinator_key: None,
            capacity: ByteSize(100 << 30),
            upload_limit: ByteSize(0),
            download_limit: ByteSize(0),
            org: String::from("unknown"),
            site: String::from("unknown"),
            metrics_listen: None,
            heartbeat_interval_ms: 5_000,
            scrub_rate: ByteSize(8 << 20),
            scrub_pause_ms: 600_000,
            max_shard_size: ByteSize(256 << 20),
            max_concurrent_puts: 16,
            send_stall_timeout_ms: 30_000,
            join: None,
        }
    }
}

impl NodeConfig {
    /// Reads a TOML config; fields left out keep their defaults.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|err| ConfigError::Parse(err.to_string()))
    }

    /// The heartbeat period.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms.max(1))
    }

    /// Takes the coordinators and their key from the join token, if one is given, and
    /// returns the token's invitation secret. A key set explicitly must match the token's.
    pub fn apply_join_token(&mut self) -> Result<Option<[u8; 32]>, ConfigError> {
        let Some(text) = &self.join else {
            return Ok(None);
        };
        let token = cairn_proto::invite::JoinToken::decode(text)
            .map_err(|err| ConfigError::Parse(format!("join: {err}")))?;
        match self.coordinator_key {
            Some(key) if key != token.key => {
                return Err(ConfigError::Invalid(
                    "coordinator_key differs from the join token's key",
                ));
            }
            _ => self.coordinator_key = Some(token.key),
        }
        if self.coordinators.is_empty() {
            self.coordinators = token
                .coordinators
                .iter()
                .filter_map(|addr| addr.parse().ok())
                .collect();
        }
        Ok(Some(token.secret))
    }

    /// Checks what defaults cannot fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.coordinator_key.is_none() {
            return Err(ConfigError::Missing(
                "coordinator_key (the coordinator's public key, from the join token)",
            ));
        }
        if self.send_stall_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "send_stall_timeout_ms must be at least 1",
            ));
        }
        if self.max_concurrent_puts == 0 {
            return Err(ConfigError::Invalid(
                "max_concurrent_puts must be at least 1",
            ));
        }
        if self.heartbeat_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "heartbeat_interval_ms must be at least 1",
            ));
        }
        Ok(())
    }

    /// The address announced to the coordinator.
    pub fn advertised_address(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }
}

/// A configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The TOML did not parse or has unknown fields.
    #[error("config: {0}")]
    Parse(String),
    /// A required field is missing.
    #[error("config: missing {0}")]
    Missing(&'static str),
    /// A field has an unusable value.
    #[error("config: {0}")]
    Invalid(&'static str),
}

/// Keys in config files are written in their text form, not as byte arrays.
mod as_text {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer, T: Display>(
        value: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => s.serialize_some(&value.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: FromStr,
        T::Err: Display,
    {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| t.parse().map_err(D::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults_and_rejects_unknown_fields() {
        let config = NodeConfig::from_toml(
            "data_dir = \"/srv/cairn\"\ncapacity = \"2TiB\"\norg = \"tu-delft\"\n",
        )
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/srv/cairn"));
        assert_eq!(config.capacity, ByteSize(2 << 40));
        assert_eq!(config.org, "tu-delft");
        assert_eq!(config.heartbeat_interval_ms, 5_000);
        assert!(matches!(
            NodeConfig::from_toml("capacty = 1"),
            Err(ConfigError::Parse(_))
        ));
        assert!(matches!(config.validate(), Err(ConfigError::Missing(_))));
    }
}
