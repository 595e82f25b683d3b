//! A gateway of the test's own on the coordinator's gateway RPC: places segments and
//! stores shards on nodes directly, so tests can commit (or not) exactly what they choose.

use std::net::SocketAddr;

use cairn_client::coordinator::{CallError, CoordinatorClient};
use cairn_client::gateway_rpc::{
    GatewayRequest, GatewayResponse, NewSegment, PlacedShard, RpcCode, StoredShard,
};
use cairn_client::node::NodeClient;
use cairn_erasure::EncodedSegment;
use cairn_proto::identity::SecretKey;
use cairn_proto::order::SignedOrder;
use cairn_proto::transport::client_endpoint;

use super::cluster::TestCluster;

/// A registered-or-not gateway key with a coordinator client and node clients.
pub struct RpcGateway {
    /// Its key (register it with `TestCluster::register_gateway`).
    pub key: SecretKey,
    /// Its QUIC endpoint.
    pub endpoint: quinn::Endpoint,
    /// Its coordinator client.
    pub client: CoordinatorClient,
}

impl RpcGateway {
    /// A gateway identity of the test's own (not yet registered).
    pub fn new(cluster: &TestCluster) -> RpcGateway {
        let key = SecretKey::generate();
        let endpoint = client_endpoint("127.0.0.1:0".parse().unwrap(), &key).unwrap();
        let client = CoordinatorClient::new(
            endpoint.clone(),
            key.clone(),
            cluster.key,
            vec![cluster.coordinator.quic.to_string()],
        );
        RpcGateway {
            key,
            endpoint,
            client,
        }
    }

    /// Asks the coordinator; panics on failure.
    pub async fn call(&self, request: GatewayRequest) -> GatewayResponse {
        match self.client.call(&request).await {
            Ok(response) => response,
            Err(err) => panic!("{} failed: {err}", request.name()),
        }
    }

    /// Asks the coordinator, expecting a refusal.
    pub async fn refused(&self, request: GatewayRequest) -> (RpcCode, String) {
        match self.client.call(&request).await {
            Err(CallError::Refused { code, message }) => (code, message),
            other => panic!("{} was not refused: {other:?}", request.name()),
        }
    }

    /// Places `segment` and stores its shards on the chosen nodes.
    pub async fn store(&self, bucket: &str, segment: &EncodedSegment) -> NewSegment {
        let placed = match self
            .call(GatewayRequest::Place {
                bucket: bucket.into(),
                shard_size: segment.shard_len() as u64,
                roots: segment.roots().to_vec(),
                avoid: Vec::new(),
            })
            .await
        {
            GatewayResponse::Placed(placed) => placed,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(placed.len(), segment.shard_count());
        let mut shards = Vec::new();
        for (PlacedShard { addr, order }, bytes) in placed.into_iter().zip(segment.shards()) {
            let receipt = self
                .node(&addr, &order)
                .put_shard(&order, bytes)
                .await
                .unwrap();
            shards.push(StoredShard { order, receipt });
        }
        NewSegment {
            len: segment.segment_len(),
            shards,
            mask: segment.mask(),
        }
    }

    /// A client for the node an order names, at `addr`.
    pub fn node(&self, addr: &str, order: &SignedOrder) -> NodeClient {
        let addr: SocketAddr = addr.parse().unwrap();
        NodeClient::new(
            self.endpoint.clone(),
            self.key.clone(),
            addr,
            order.order.node,
        )
    }
}
