//! Real QUIC connections on loopback: key pinning, client policy, ALPN.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::identity::{PublicKey, SecretKey};
use cairn_proto::transport::{
    PeerPolicy, TransportError, client_endpoint, connect, negotiated_alpn, peer_key,
    server_endpoint,
};
use cairn_proto::wire::{COORDINATOR_ALPN, NODE_ALPN};

const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// Fails a test that hangs instead of failing; QUIC's idle timeout is 30 s.
const TEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A server that echoes every bi-stream and reports each accepted client's key.
fn echo_server(
    key: &SecretKey,
    alpn: &[u8],
    policy: PeerPolicy,
) -> (
    quinn::Endpoint,
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Option<PublicKey>>,
) {
    let endpoint = server_endpoint(LOOPBACK, key, &[alpn], policy).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let accept = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accept.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let _ = tx.send(peer_key(&conn));
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        if let Ok(data) = recv.read_to_end(1 << 20).await {
                            let _ = send.write_all(&data).await;
                            let _ = send.finish();
                        }
                    });
                }
            });
        }
    });
    (endpoint, addr, rx)
}

async fn echo(conn: &quinn::Connection, data: &[u8]) -> Result<Vec<u8>, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(data).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    recv.read_to_end(1 << 20).await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn pinned_connection_echoes_and_both_sides_see_keys() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let server_key = SecretKey::generate();
        let client_key = SecretKey::generate();
        let (_server, addr, mut accepted) = echo_server(&server_key, NODE_ALPN, PeerPolicy::Any);

        let client = client_endpoint(LOOPBACK, &client_key).unwrap();
        let conn = connect(&client, &client_key, addr, &server_key.public(), NODE_ALPN)
            .await
            .unwrap();
        assert_eq!(peer_key(&conn), Some(server_key.public()));

        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(echo(&conn, &payload).await.unwrap(), payload);
        assert_eq!(
            echo(&conn, b"second stream").await.unwrap(),
            b"second stream"
        );

        assert_eq!(accepted.recv().await, Some(Some(client_key.public())));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn wrong_pinned_key_fails_connect() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let server_key = SecretKey::generate();
        let imposter_expected = SecretKey::generate().public();
        let client_key = SecretKey::generate();
        let (_server, addr, _accepted) = echo_server(&server_key, NODE_ALPN, PeerPolicy::Any);

        let client = client_endpoint(LOOPBACK, &client_key).unwrap();
        match connect(&client, &client_key, addr, &imposter_expected, NODE_ALPN).await {
            Err(TransportError::WrongPeer { expected, found }) => {
                assert_eq!(expected, imposter_expected);
                assert_eq!(found, server_key.public());
            }
            other => panic!("expected WrongPeer, got {other:?}"),
        }
        // The endpoint stays usable for a correctly pinned connection.
        let conn = connect(&client, &client_key, addr, &server_key.public(), NODE_ALPN)
            .await
            .unwrap();
        assert_eq!(echo(&conn, b"ok").await.unwrap(), b"ok");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn client_refused_by_policy_fails_on_first_stream() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let server_key = SecretKey::generate();
        let allowed = SecretKey::generate();
        let stranger = SecretKey::generate();
        let allowed_pk = allowed.public();
        let policy = PeerPolicy::Allow(Arc::new(move |k: &PublicKey| *k == allowed_pk));
        let (_server, addr, mut accepted) = echo_server(&server_key, COORDINATOR_ALPN, policy);

        // A registered client gets through.
        let client = client_endpoint(LOOPBACK, &allowed).unwrap();
        let conn = connect(
            &client,
            &allowed,
            addr,
            &server_key.public(),
            COORDINATOR_ALPN,
        )
        .await
        .unwrap();
        assert_eq!(echo(&conn, b"hello").await.unwrap(), b"hello");
        assert_eq!(accepted.recv().await, Some(Some(allowed.public())));

        // A stranger: TLS 1.3 lets its handshake "finish" before the server has judged
        // its key, so connect may succeed, but nothing it sends gets through.
        let client = client_endpoint(LOOPBACK, &stranger).unwrap();
        match connect(
            &client,
            &stranger,
            addr,
            &server_key.public(),
            COORDINATOR_ALPN,
        )
        .await
        {
            Ok(conn) => {
                let result = echo(&conn, b"let me in").await;
                assert!(
                    result.is_err(),
                    "refused client's stream worked: {result:?}"
                );
            }
            Err(TransportError::Connect(_)) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
        // The server never handed the stranger's connection to the application.
        assert!(accepted.try_recv().is_err());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn alpn_mismatch_fails() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let server_key = SecretKey::generate();
        let client_key = SecretKey::generate();
        let (_server, addr, mut accepted) =
            echo_server(&server_key, COORDINATOR_ALPN, PeerPolicy::Any);
        let client = client_endpoint(LOOPBACK, &client_key).unwrap();
        match connect(&client, &client_key, addr, &server_key.public(), NODE_ALPN).await {
            Err(TransportError::Connect(message)) => {
                assert!(!message.is_empty());
            }
            other => panic!("expected a connect error, got {other:?}"),
        }
        assert!(accepted.try_recv().is_err());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn server_endpoint_can_also_connect_out() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        // A node uses its one endpoint both to serve and to reach the coordinator.
        let coordinator_key = SecretKey::generate();
        let node_key = SecretKey::generate();
        let (_coordinator, addr, mut accepted) =
            echo_server(&coordinator_key, COORDINATOR_ALPN, PeerPolicy::Any);
        let node = server_endpoint(LOOPBACK, &node_key, &[NODE_ALPN], PeerPolicy::Any).unwrap();
        let conn = connect(
            &node,
            &node_key,
            addr,
            &coordinator_key.public(),
            COORDINATOR_ALPN,
        )
        .await
        .unwrap();
        assert_eq!(echo(&conn, b"beat").await.unwrap(), b"beat");
        assert_eq!(accepted.recv().await, Some(Some(node_key.public())));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn bind_failure_is_reported() {
    let key = SecretKey::generate();
    let first = server_endpoint(LOOPBACK, &key, &[NODE_ALPN], PeerPolicy::Any).unwrap();
    let taken = first.local_addr().unwrap();
    assert!(matches!(
        server_endpoint(taken, &key, &[NODE_ALPN], PeerPolicy::Any),
        Err(TransportError::Bind(_))
    ));
}

/// A client that accepts any server raw key but presents none of its own.
mod anonymous {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct AnyServer(rustls::crypto::WebPkiSupportedAlgorithms);

    impl ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("no TLS 1.2".into()))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature_with_raw_key(
                message,
                &SubjectPublicKeyInfoDer::from(cert.as_ref()),
                dss,
                &self.0,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ED25519]
        }

        fn requires_raw_public_keys(&self) -> bool {
            true
        }
    }

    pub fn config(alpn: &[u8]) -> quinn::ClientConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(AnyServer(provider.signature_verification_algorithms));
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        tls.alpn_protocols = vec![alpn.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        quinn::ClientConfig::new(Arc::new(crypto))
    }
}

#[tokio::test]
async fn client_without_a_key_is_refused() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let server_key = SecretKey::generate();
        let (_server, addr, mut accepted) = echo_server(&server_key, NODE_ALPN, PeerPolicy::Any);
        let client = quinn::Endpoint::client(LOOPBACK).unwrap();
        let connecting = client
            .connect_with(anonymous::config(NODE_ALPN), addr, "cairn")
            .unwrap();
        // As with a refused key, the refusal may only show on the first stream.
        if let Ok(conn) = connecting.await {
            assert!(echo(&conn, b"anonymous").await.is_err());
        }
        assert!(accepted.try_recv().is_err());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_server_speaking_two_protocols_tells_which_one_was_chosen() {
    let server_key = SecretKey::generate();
    let client_key = SecretKey::generate();
    let server = server_endpoint(
        LOOPBACK,
        &server_key,
        &[NODE_ALPN, COORDINATOR_ALPN],
        PeerPolicy::Any,
    )
    .unwrap();
    let addr = server.local_addr().unwrap();
    let client = client_endpoint(LOOPBACK, &client_key).unwrap();
    for alpn in [COORDINATOR_ALPN, NODE_ALPN] {
        let accepted = tokio::spawn({
            let server = server.clone();
            async move { server.accept().await.unwrap().await.unwrap() }
        });
        let conn = tokio::time::timeout(
            TEST_TIMEOUT,
            connect(&client, &client_key, addr, &server_key.public(), alpn),
        )
        .await
        .unwrap()
        .unwrap();
        let seen = accepted.await.unwrap();
        assert_eq!(negotiated_alpn(&seen).as_deref(), Some(alpn));
        assert_eq!(negotiated_alpn(&conn).as_deref(), Some(alpn));
    }
}
