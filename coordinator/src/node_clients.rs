//! How the leader's own loops (garbage collection, audits) reach storage nodes: one
//! [`NodeClient`] per node at its registered address, and orders the coordinator signs for
//! itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use cairn_client::node::NodeClient;
use cairn_proto::identity::{NodeId, SecretKey};
use cairn_proto::order::{Action, Order, SignedOrder, unix_now};

use crate::catalog::model::NodeRecord;

/// Clients by node, made on first use and remade when a node's address changes.
pub struct NodeClients {
    endpoint: quinn::Endpoint,
    key: SecretKey,
    clients: HashMap<NodeId, (String, Arc<NodeClient>)>,
}

impl NodeClients {
    /// Clients dialling from `endpoint` as the coordinator `key`.
    pub fn new(endpoint: quinn::Endpoint, key: SecretKey) -> Self {
        Self {
            endpoint,
            key,
            clients: HashMap::new(),
        }
    }

    /// The client for `node` at its current address.
    pub async fn get(&mut self, node: &NodeRecord) -> Result<Arc<NodeClient>, String> {
        if let Some((addr, client)) = self.clients.get(&node.id)
            && *addr == node.addr
        {
            return Ok(client.clone());
        }
        let resolved: SocketAddr = tokio::net::lookup_host(node.addr.as_str())
            .await
            .map_err(|e| format!("node address {}: {e}", node.addr))?
            .next()
            .ok_or_else(|| format!("node address {} resolves to nothing", node.addr))?;
        let client = Arc::new(NodeClient::new(
            self.endpoint.clone(),
            self.key.clone(),
            resolved,
            node.id,
        ));
        self.clients
            .insert(node.id, (node.addr.clone(), client.clone()));
        Ok(client)
    }

    /// An order for the coordinator itself to present to `node`, valid `secs` seconds,
    /// with a random serial.
    pub fn order(&self, node: NodeId, action: Action, secs: u64) -> Result<SignedOrder, String> {
        sign_own_order(&self.key, node, action, secs)
    }
}

/// An order signed by `key` for `key` itself to present to `node`.
pub fn sign_own_order(
    key: &SecretKey,
    node: NodeId,
    action: Action,
    secs: u64,
) -> Result<SignedOrder, String> {
    let mut serial = [0u8; 8];
    getrandom::fill(&mut serial).map_err(|e| e.to_string())?;
    let order = Order {
        node,
        client: key.public(),
        serial: u64::from_le_bytes(serial),
        expires_at: unix_now() + secs,
        action,
    };
    Ok(SignedOrder::sign(order, key))
}
