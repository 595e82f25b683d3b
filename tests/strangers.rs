//! Strangers against real processes: anyone who can reach a coordinator's, node's or
//! gateway's port, and a node that lies about what it holds, must not be able to make them
//! hold memory or connections for as long or as much as they like.
//!
//! - The coordinator's gateway RPC reads nothing from a key that is not a registered
//!   gateway: a 16 MiB frame from a stranger is answered `Forbidden` unread and its
//!   connection closed. A registered gateway's requests are read under a request-sized
//!   limit (refused from the 4-byte prefix alone) and within a deadline, and one nested
//!   as deep as a frame allows cannot overflow the coordinator's stack.
//! - A node refuses a request frame larger than any request from its prefix alone, before
//!   it can know whether the order inside would have been valid.
//! - The coordinator's collector stops reading a node's inventory once it lists more
//!   shards than the catalog gives that node room for.
//! - The S3 gateway cuts off clients that send a request head byte by byte, or nothing
//!   at all, and answers `503 SlowDown` to one address's connections past its cap.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cairn_client::gateway_rpc::{
    GATEWAY_ALPN, GatewayRequest, GatewayResponse, MAX_RPC_FRAME, MAX_RPC_REQUEST, RpcCode,
};
use cairn_client::records::RequestId;
use cairn_proto::identity::SecretKey;
use cairn_proto::ids::ShardId;
use cairn_proto::invite::JoinToken;
use cairn_proto::transport::{PeerPolicy, client_endpoint, connect, server_endpoint};
use cairn_proto::wire::{
    COORDINATOR_ALPN, CoordinatorRequest, CoordinatorResponse, ErrorCode, Heartbeat, JoinRequest,
    MAX_NODE_REQUEST, NODE_ALPN, NodeRequest, NodeResponse, read_frame, read_frame_within,
    write_frame, write_frame_within,
};
use cairn_s3_api::daemon::{HEADER_TIMEOUT, MAX_CONNECTIONS_PER_CLIENT};
use support::NodeProcess;
use support::cluster::{GatewayProcess, TestCluster};
use support::coordinator::invite;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long an answer the code gives at once may take on a loaded test machine.
const PROMPTLY: Duration = Duration::from_secs(5);

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A connection to the coordinator's gateway RPC under `key`.
async fn gateway_rpc(cluster: &TestCluster, key: &SecretKey) -> quinn::Connection {
    let endpoint = client_endpoint(any_port(), key).unwrap();
    connect(
        &endpoint,
        key,
        cluster.coordinator.quic,
        &cluster.key,
        GATEWAY_ALPN,
    )
    .await
    .unwrap()
}

/// A key that is not a registered gateway opens the gateway RPC and starts sending a
/// 16 MiB request (the largest frame any RPC message may be). The coordinator reads none
/// of it: the stranger is answered `Forbidden` while its frame is still unsent, its
/// connection is closed, and the rest of the frame can never be delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_key_s_16_mib_gateway_rpc_frame_is_refused_unread_and_disconnected() {
    let cluster = TestCluster::start(&[]);
    let stranger = SecretKey::generate();
    let conn = gateway_rpc(&cluster, &stranger).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let writer = tokio::spawn(async move {
        send.write_all(&MAX_RPC_FRAME.to_be_bytes()).await?;
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..(MAX_RPC_FRAME >> 20) {
            send.write_all(&chunk).await?;
        }
        Ok::<_, quinn::WriteError>(())
    });

    let answer = tokio::time::timeout(
        PROMPTLY,
        read_frame_within::<_, GatewayResponse>(&mut recv, MAX_RPC_FRAME),
    )
    .await
    .expect("no answer to a stranger")
    .expect("the refusal is readable");
    let GatewayResponse::Error { code, message } = answer else {
        panic!("a stranger was answered {answer:?}");
    };
    assert_eq!(code, RpcCode::Forbidden, "{message}");

    let closed = tokio::time::timeout(PROMPTLY, conn.closed())
        .await
        .expect("the coordinator kept a stranger's connection open");
    assert!(
        matches!(
            &closed,
            quinn::ConnectionError::ApplicationClosed(close)
                if close.reason.as_ref() == b"not a registered gateway"
        ),
        "{closed:?}"
    );
    // QUIC's 16 MiB stream window takes all of the frame but 4 bytes without anyone
    // reading; only a reader of the frame could let the rest through.
    let written = writer.await.unwrap();
    assert!(
        written.is_err(),
        "the coordinator took in the whole 16 MiB frame of a stranger"
    );
}

/// A registered gateway announces a request frame of 4 MiB + 1 byte (under the 16 MiB of
/// a response, over the largest request) and sends nothing more: refused at once, from the
/// prefix, and the connection goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_announcing_an_oversized_request_frame_is_refused_from_its_prefix() {
    let cluster = TestCluster::start(&[]);
    let gateway = SecretKey::generate();
    cluster.register_gateway(&gateway.public());
    let conn = gateway_rpc(&cluster, &gateway).await;

    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&(MAX_RPC_REQUEST + 1).to_be_bytes())
        .await
        .unwrap();
    let answer = tokio::time::timeout(
        PROMPTLY,
        read_frame_within::<_, GatewayResponse>(&mut recv, MAX_RPC_FRAME),
    )
    .await
    .expect("the coordinator waited for an oversized request's body")
    .unwrap();
    let GatewayResponse::Error { code, message } = answer else {
        panic!("an oversized request was answered {answer:?}");
    };
    assert_eq!(code, RpcCode::InvalidRequest, "{message}");
    assert!(message.contains("size limit"), "{message}");

    assert_eq!(ping(&conn).await, GatewayResponse::Done);
}

/// A registered gateway opens a request frame and stops sending halfway: the coordinator
/// gives up on it after its deadline instead of holding the stream for ever, and the
/// connection goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_stalls_inside_a_request_frame_is_given_up_on() {
    let cluster = TestCluster::start(&[]);
    let gateway = SecretKey::generate();
    cluster.register_gateway(&gateway.public());
    let conn = gateway_rpc(&cluster, &gateway).await;

    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&100u32.to_be_bytes()).await.unwrap();
    send.write_all(&[0; 10]).await.unwrap();
    let started = Instant::now();
    // The coordinator's deadline is 10 s; three times that is "never".
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        read_frame_within::<_, GatewayResponse>(&mut recv, MAX_RPC_FRAME),
    )
    .await
    .expect("a stalled request frame was never given up on")
    .unwrap();
    let GatewayResponse::Error { code, message } = answer else {
        panic!("a stalled request was answered {answer:?}");
    };
    assert_eq!(code, RpcCode::InvalidRequest, "{message}");
    assert!(message.contains("within"), "{message}");
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "given up on after {:?}, before any deadline a gateway could meet",
        started.elapsed()
    );

    assert_eq!(ping(&conn).await, GatewayResponse::Done);
}

/// A registered gateway sends a request frame of `Once` wrapped in `Once` as deep as a
/// request frame allows (about 246 000 levels in 4 MiB). Decoding it level by level would
/// overflow the coordinator's stack and kill the process; it is refused at the second
/// level, and the coordinator goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_nesting_requests_without_end_cannot_crash_the_coordinator() {
    let cluster = TestCluster::start(&[]);
    let gateway = SecretKey::generate();
    cluster.register_gateway(&gateway.public());
    let conn = gateway_rpc(&cluster, &gateway).await;

    // One level's bytes: an encoded `Once` around a ping, less the ping.
    let ping_bytes = encoded(&GatewayRequest::Ping).await;
    let once = GatewayRequest::Once {
        id: RequestId([1; 16]),
        request: Box::new(GatewayRequest::Ping),
    };
    let once_bytes = encoded(&once).await;
    let level = &once_bytes[..once_bytes.len() - ping_bytes.len()];
    let levels = (MAX_RPC_REQUEST as usize - ping_bytes.len()) / level.len();
    let mut body = level.repeat(levels);
    body.extend_from_slice(&ping_bytes);
    let mut frame = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(&body);

    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&frame).await.unwrap();
    send.finish().unwrap();
    let answer = tokio::time::timeout(
        PROMPTLY,
        read_frame_within::<_, GatewayResponse>(&mut recv, MAX_RPC_FRAME),
    )
    .await
    .expect("no answer to a deeply nested request")
    .expect("the coordinator went away");
    let GatewayResponse::Error { code, message } = answer else {
        panic!("{levels} nested requests were answered {answer:?}");
    };
    assert_eq!(code, RpcCode::InvalidRequest, "{message}");
    assert!(message.contains("malformed"), "{message}");

    assert_eq!(ping(&conn).await, GatewayResponse::Done);
}

/// `request` as postcard, without its frame's length prefix.
async fn encoded(request: &GatewayRequest) -> Vec<u8> {
    let mut frame = Vec::new();
    write_frame_within(&mut frame, request, MAX_RPC_REQUEST)
        .await
        .unwrap();
    frame.split_off(4)
}

async fn ping(conn: &quinn::Connection) -> GatewayResponse {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    write_frame_within(&mut send, &GatewayRequest::Ping, MAX_RPC_REQUEST)
        .await
        .unwrap();
    send.finish().unwrap();
    tokio::time::timeout(PROMPTLY, read_frame_within(&mut recv, MAX_RPC_FRAME))
        .await
        .expect("no answer to a ping")
        .unwrap()
}

/// Any key may open a stream to a node, and the order that decides whether it may ask
/// anything is inside the request frame. A stranger announcing a 512 KiB frame (under the
/// 1 MiB any frame may be, far over any request) is refused from the prefix, without the
/// node waiting for the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_s_oversized_request_frame_to_a_node_is_refused_from_its_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = SecretKey::generate();
    let node = NodeProcess::start(dir.path(), &coordinator.public(), "");
    let stranger = SecretKey::generate();
    let endpoint = client_endpoint(any_port(), &stranger).unwrap();
    let conn = connect(&endpoint, &stranger, node.addr, &node.id, NODE_ALPN)
        .await
        .unwrap();

    let announced: u32 = 512 << 10;
    assert!(announced > MAX_NODE_REQUEST);
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&announced.to_be_bytes()).await.unwrap();
    let answer = tokio::time::timeout(PROMPTLY, read_frame::<_, NodeResponse>(&mut recv))
        .await
        .expect("the node waited for an oversized request's body")
        .unwrap();
    assert!(
        matches!(
            answer,
            NodeResponse::Error {
                code: ErrorCode::TooLarge,
                ..
            }
        ),
        "{answer:?}"
    );
}

/// Shard ids per inventory page the lying node sends (a node's own page size).
const PAGE: usize = 32 * 1024;
/// Ids after which the lying node stops by itself: the coordinator never cut it off.
const GIVE_UP_AFTER: usize = 8 << 20;

/// A node that joined with an invitation answers the collector's inventory order with
/// pages of invented shard ids that never end. The catalog places nothing on it, so the
/// collector stops reading after its slack (2²⁰ ids) and one page; what the node manages
/// to send beyond that is only what QUIC's flow-control window lets it buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_listing_an_endless_inventory_is_cut_off() {
    let cluster = TestCluster::start_with(&[], &["--gc-interval-ms", "300"]);
    let liar = SecretKey::generate();
    let endpoint = server_endpoint(any_port(), &liar, &[NODE_ALPN], PeerPolicy::Any).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel();
    let server = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            let sent_tx = sent_tx.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((send, recv)) = conn.accept_bi().await {
                    let sent_tx = sent_tx.clone();
                    tokio::spawn(async move {
                        if let Some(sent) = answer_endlessly(send, recv).await {
                            let _ = sent_tx.send(sent);
                        }
                    });
                }
            });
        }
    });

    // Join with a real invitation, then heartbeat once so the collector counts it alive.
    let token = JoinToken::decode(&invite(&cluster.coordinator, "liars")).unwrap();
    let join = CoordinatorRequest::Join(JoinRequest {
        secret: token.secret,
        listen: addr.to_string(),
        capacity_bytes: 1 << 40,
        org: "liars".into(),
        site: "nowhere".into(),
    });
    let coordinator = |request: CoordinatorRequest| {
        let (endpoint, liar, cluster) = (&endpoint, &liar, &cluster);
        async move {
            let conn = connect(
                endpoint,
                liar,
                cluster.coordinator.quic,
                &cluster.key,
                COORDINATOR_ALPN,
            )
            .await
            .unwrap();
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            write_frame(&mut send, &request).await.unwrap();
            send.finish().unwrap();
            read_frame::<_, CoordinatorResponse>(&mut recv)
                .await
                .unwrap()
        }
    };
    assert_eq!(coordinator(join).await, CoordinatorResponse::Ack);
    let heartbeat = CoordinatorRequest::Heartbeat(Heartbeat {
        node: liar.public(),
        listen: addr.to_string(),
        used_bytes: 0,
        capacity_bytes: 1 << 40,
        shard_count: GIVE_UP_AFTER as u64,
        damaged: Vec::new(),
        version: "liar".into(),
        org: "liars".into(),
        site: "nowhere".into(),
    });
    assert!(
        matches!(
            coordinator(heartbeat).await,
            CoordinatorResponse::Time { .. }
        ),
        "the liar's heartbeat was not taken"
    );

    let (sent, cut_off) = tokio::time::timeout(Duration::from_secs(60), sent_rx.recv())
        .await
        .expect("the collector never asked for an inventory")
        .expect("the lying node is running");
    assert!(
        cut_off,
        "the collector read {sent} invented shard ids without stopping"
    );
    // Read: at most 2^20 ids and one page; in flight: QUIC's 16 MiB stream window of
    // 16-byte ids and a page being written.
    let bound = (1 << 20) + PAGE + (1 << 20) + 2 * PAGE;
    assert!(
        sent <= bound,
        "the collector let a node with nothing placed on it send {sent} shard ids"
    );
}

/// Answers an inventory order with pages that all say more follow, until the reader stops
/// reading: returns the ids sent and whether the reader stopped (rather than this side
/// giving up). Other requests are refused; `None` for them.
async fn answer_endlessly(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> Option<(usize, bool)> {
    let request = read_frame::<_, NodeRequest>(&mut recv).await.ok()?;
    if !matches!(request, NodeRequest::Inventory { .. }) {
        let refusal = NodeResponse::Error {
            code: ErrorCode::Busy,
            message: "this node only lists".into(),
        };
        let _ = write_frame(&mut send, &refusal).await;
        let _ = send.finish();
        return None;
    }
    let shards = (0..PAGE as u128)
        .map(|i| ShardId(i.to_be_bytes()))
        .collect();
    let mut page = Vec::new();
    write_frame(&mut page, &NodeResponse::Inventory { shards, more: true })
        .await
        .unwrap();
    let mut sent = 0;
    while sent < GIVE_UP_AFTER {
        if send.write_all(&page).await.is_err() {
            return Some((sent, true));
        }
        sent += PAGE;
    }
    Some((sent, false))
}

/// A gateway process of its own, with no coordinator behind it (operators' `/health`
/// needs none); its S3 address.
fn lone_gateway(dir: &std::path::Path) -> (GatewayProcess, SocketAddr) {
    let nobody: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let gateway = GatewayProcess::start(dir, &[nobody], &SecretKey::generate().public());
    let addr = gateway
        .endpoint
        .strip_prefix("http://")
        .unwrap()
        .parse()
        .unwrap();
    (gateway, addr)
}

/// Longest the gateway may leave a client that has not sent a whole request head.
fn cut_off_within() -> Duration {
    HEADER_TIMEOUT + Duration::from_secs(10)
}

/// Slowloris: a request head sent a byte a second, never finished, and a connection that
/// sends nothing at all. The gateway hangs up on both once its header timeout has passed,
/// and goes on serving others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_sending_headers_byte_by_byte_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (_gateway, addr) = lone_gateway(dir.path());

    let trickler = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = b"GET /health HTTP/1.1\r\nHost: gateway\r\nX-Slow: ";
        let started = Instant::now();
        let mut buf = [0u8; 1024];
        for sent in 0.. {
            assert!(
                started.elapsed() < cut_off_within(),
                "still connected after trickling {sent} bytes over {:?}",
                started.elapsed()
            );
            let byte = head.get(sent).copied().unwrap_or(b'a');
            if stream.write_all(&[byte]).await.is_err() {
                break;
            }
            // The attack's pace: a byte a second, unless the gateway hangs up first.
            match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
                Err(_) => continue,
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => panic!(
                    "an unfinished head was answered: {}",
                    String::from_utf8_lossy(&buf[..n])
                ),
            }
        }
        started.elapsed()
    });
    let silent = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(cut_off_within(), stream.read(&mut buf))
            .await
            .expect("a connection that never sent a byte was kept open");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        started.elapsed()
    });
    let trickled = trickler.await.unwrap();
    let waited = silent.await.unwrap();
    // Cut off by the timeout, not by something that refuses every connection.
    assert!(trickled >= HEADER_TIMEOUT / 2, "{trickled:?}");
    assert!(waited >= HEADER_TIMEOUT / 2, "{waited:?}");

    let mut stream = TcpStream::connect(addr).await.unwrap();
    assert!(health(&mut stream).await.starts_with("HTTP/1.1 200"));
}

/// One address opens as many connections as a client may hold, each served; the next is
/// answered `503 SlowDown` and closed, while the held ones are still served; once one of
/// them closes, a new connection is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_from_one_address_past_the_cap_are_answered_slow_down() {
    let dir = tempfile::tempdir().unwrap();
    let (_gateway, addr) = lone_gateway(dir.path());

    let mut held = Vec::new();
    for i in 0..MAX_CONNECTIONS_PER_CLIENT {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let answer = health(&mut stream).await;
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "connection {i}: {answer}"
        );
        held.push(stream);
    }

    let mut extra = TcpStream::connect(addr).await.unwrap();
    let answer = health(&mut extra).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("<Code>SlowDown</Code>"), "{answer}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(PROMPTLY, extra.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the refused connection stayed open: {closed:?}"
    );

    let answer = health(&mut held[0]).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A closed connection gives its place back as soon as the gateway sees it close.
    drop(held.pop());
    let mut served = false;
    for _ in 0..100 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let answer = health(&mut stream).await;
        if answer.starts_with("HTTP/1.1 200") {
            served = true;
            break;
        }
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    }
    assert!(served, "a closed connection's place was never given back");
}

/// `GET /health` on `stream` (kept alive); the response's head and body as text.
async fn health(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let body = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|len| len.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + body {
                    break;
                }
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(PROMPTLY, read)
        .await
        .expect("no answer to GET /health");
    String::from_utf8_lossy(&got).into_owned()
}

/// A client that asks a node for a shard larger than its flow-control window and then
/// stops reading leaves the node's answer blocked; the node gives up after its send-stall
/// timeout (1 s here): the stream is reset, so the buffer held for it is let go, and the
/// client, reading at last, gets less than the shard and an error instead of the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_is_given_up_on_by_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = support::Cluster::new();
    let node = NodeProcess::start(
        dir.path(),
        &cluster.coordinator.public(),
        "send_stall_timeout_ms = 1000",
    );
    // Past the 16 MiB stream window a reader grants before it reads anything.
    let data = support::bytes(24 << 20, 3);
    let id = support::shard_id(1);
    cluster
        .client(&node)
        .put_shard(&cluster.put(node.id, id, &data), &data)
        .await
        .unwrap();

    let conn = connect(
        &cluster.endpoint,
        &cluster.gateway,
        node.addr,
        &node.id,
        NODE_ALPN,
    )
    .await
    .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let request = NodeRequest::GetShard {
        order: cluster.get(node.id, id, &data),
        range: None,
    };
    write_frame(&mut send, &request).await.unwrap();
    let _ = send.finish();
    // Not reading for three send-stall timeouts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut received = 0usize;
    let ended = loop {
        match tokio::time::timeout(PROMPTLY, recv.read_chunk(1 << 20, true)).await {
            Ok(Ok(Some(chunk))) => received += chunk.bytes.len(),
            Ok(Ok(None)) => break "finished".to_string(),
            Ok(Err(err)) => break err.to_string(),
            Err(_) => break "stalled".to_string(),
        }
    };
    assert!(
        received < data.len(),
        "the whole shard arrived after the reader stalled ({received} bytes, {ended})"
    );
    assert!(ended.contains("reset"), "{ended}");
}
