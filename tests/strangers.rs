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
//! - A peer not yet known (no registration, no order) gets a small QUIC receive window
//!   and few streams on the coordinator's and nodes' ports, so it cannot park megabytes
//!   of unread data there.
//! - The coordinator's collector stops reading a node's inventory once it lists more
//!   shards than the catalog gives that node room for.
//! - The S3 gateway cuts off clients that send a request head byte by byte, or nothing
//!   at all, an upload body that stops arriving, and connections left idle (HTTP/1 and
//!   HTTP/2), and answers the client takes nothing of (a full socket, or an HTTP/2 stream
//!   whose window it never opens); it answers `503 SlowDown` to one address's connections
//!   past its cap, and to its anonymous requests past its rate.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cairn_client::gateway_rpc::{
    GATEWAY_ALPN, GatewayRequest, GatewayResponse, MAX_RPC_FRAME, MAX_RPC_REQUEST, RpcCode,
};
use cairn_client::records::RequestId;
use cairn_gateway::daemon::{HEADER_TIMEOUT, MAX_CONNECTIONS_PER_CLIENT};
use cairn_proto::identity::SecretKey;
use cairn_proto::ids::ShardId;
use cairn_proto::invite::JoinToken;
use cairn_proto::transport::{
    MAX_HANDSHAKES_PER_CLIENT, MAX_STRANGER_CONNECTIONS, PeerPolicy, STRANGER_WINDOW,
    client_endpoint, connect, server_endpoint,
};
use cairn_proto::wire::{
    COORDINATOR_ALPN, CoordinatorRequest, CoordinatorResponse, ErrorCode, Heartbeat, JoinRequest,
    MAX_NODE_REQUEST, NODE_ALPN, NodeRequest, NodeResponse, read_frame, read_frame_within,
    write_frame, write_frame_within,
};
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

/// A stranger (a key nobody registered, holding no order) parks data in streams the server
/// does not read: on the coordinator's node port, in bidirectional streams opened behind a
/// first one it leaves unfinished (the coordinator reads one request from a stranger and
/// accepts no other stream); on a node, in unidirectional streams (Cairn reads none). Each
/// connection of a peer not yet known gets a small receive window and few streams, so the
/// stranger's writes block after a fraction of a MiB, where the windows of known peers
/// (16 MiB a stream, 64 MiB a connection) would have taken tens of MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_park_more_than_a_small_window_of_unread_data() {
    let cluster = TestCluster::start(&[]);
    let stranger = SecretKey::generate();
    let endpoint = client_endpoint(any_port(), &stranger).unwrap();
    let conn = connect(
        &endpoint,
        &stranger,
        cluster.coordinator.quic,
        &cluster.key,
        COORDINATOR_ALPN,
    )
    .await
    .unwrap();
    // The one request the coordinator reads from a stranger, never finished.
    let (mut first, _answer) = conn.open_bi().await.unwrap();
    first.write_all(&[0]).await.unwrap();
    let parked = park(&conn, true).await;
    assert!(
        parked <= u64::from(STRANGER_WINDOW),
        "a stranger parked {parked} bytes on the coordinator"
    );

    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &cluster.key, "");
    let conn = connect(&endpoint, &stranger, node.addr, &node.id, NODE_ALPN)
        .await
        .unwrap();
    let parked = park(&conn, false).await;
    assert!(
        parked <= u64::from(STRANGER_WINDOW),
        "a stranger parked {parked} bytes on a node"
    );
}

/// Bytes the server let `conn` write into streams it does not read: up to 8 streams
/// (bidirectional or not), each written until its writes block for a second.
async fn park(conn: &quinn::Connection, bidirectional: bool) -> u64 {
    let chunk = vec![0x5au8; 64 << 10];
    let mut writers = Vec::new();
    for _ in 0..8 {
        let open = async {
            if bidirectional {
                conn.open_bi().await.map(|(send, _)| send)
            } else {
                conn.open_uni().await
            }
        };
        let Ok(Ok(mut send)) = tokio::time::timeout(Duration::from_secs(1), open).await else {
            break;
        };
        let chunk = chunk.clone();
        writers.push(tokio::spawn(async move {
            let mut written = 0u64;
            while let Ok(Ok(())) =
                tokio::time::timeout(Duration::from_secs(1), send.write_all(&chunk)).await
            {
                written += chunk.len() as u64;
                if written >= 32 << 20 {
                    break;
                }
            }
            written
        }));
    }
    let mut total = 0;
    for writer in writers {
        total += writer.await.unwrap();
    }
    total
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

/// A gateway process of its own started with `flags`, with no coordinator behind it
/// (operators' `/health` needs none); its S3 address.
fn lone_gateway(dir: &std::path::Path, flags: &[&str]) -> (GatewayProcess, SocketAddr) {
    let nobody: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let gateway =
        GatewayProcess::start_with(dir, &[nobody], &SecretKey::generate().public(), flags);
    let addr = s3_addr(&gateway);
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
    let (_gateway, addr) = lone_gateway(dir.path(), &[]);

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
    let (_gateway, addr) = lone_gateway(dir.path(), &[]);

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
    exchange(stream, "GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n").await
}

/// Sends `request` (a whole HTTP/1.1 request) on `stream` and reads one response; its head
/// and body as text (empty if the connection closed first).
async fn exchange(stream: &mut TcpStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).await.unwrap();
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
        .unwrap_or_else(|_| panic!("no answer to {request}"));
    String::from_utf8_lossy(&got).into_owned()
}

/// How long `stream` stays open while its peer sends nothing we wait for, reading (and
/// dropping) whatever arrives, up to `limit`; `None` if it was still open then.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .ok()
        .map(|()| started.elapsed())
}

/// A cluster of three nodes with a private bucket and a public one (k = 2, m = 1), a
/// gateway started with `flags`, and an access key (id, secret).
fn s3_cluster(flags: &[&str]) -> (TestCluster, GatewayProcess, (String, String)) {
    let cluster = TestCluster::start(&["org-a", "org-b", "org-c"]);
    for (name, extra) in [("data", &[][..]), ("public", &["--public-read"][..])] {
        let mut args = vec!["bucket", "create", name, "--k", "2", "--m", "1"];
        args.extend_from_slice(extra);
        support::coordinator::admin(&cluster.coordinator, &args).unwrap();
    }
    let gateway = cluster.start_gateway_with(flags);
    let key = cluster.access_key();
    (cluster, gateway, key)
}

/// A presigned SigV4 URL (path-style) for `method` on `bucket`/`key` at `endpoint`:
/// what an HTTP client with no S3 library can send, signed.
fn presigned(
    endpoint: &str,
    access: &(String, String),
    method: &str,
    bucket: &str,
    key: &str,
) -> url::Url {
    use rusty_s3::S3Action as _;
    let handle = rusty_s3::Bucket::new(
        endpoint.parse().unwrap(),
        rusty_s3::UrlStyle::Path,
        bucket.to_string(),
        "us-east-1".to_string(),
    )
    .unwrap();
    let credentials = rusty_s3::Credentials::new(access.0.clone(), access.1.clone());
    let lifetime = Duration::from_secs(600);
    match method {
        "PUT" => handle.put_object(Some(&credentials), key).sign(lifetime),
        "GET" => handle.get_object(Some(&credentials), key).sign(lifetime),
        other => panic!("no presigning for {other}"),
    }
}

/// The request line's target and the Host header of `url`.
fn target(url: &url::Url) -> (String, String) {
    let mut path = url.path().to_string();
    if let Some(query) = url.query() {
        path = format!("{path}?{query}");
    }
    let host = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    (path, host)
}

/// The S3 address of a gateway process.
fn s3_addr(gateway: &GatewayProcess) -> SocketAddr {
    gateway
        .endpoint
        .strip_prefix("http://")
        .unwrap()
        .parse()
        .unwrap()
}

/// Stores `body` as `bucket`/`name` with a presigned PUT written by hand over HTTP/1.1 on a
/// connection of its own, and checks it was answered 200. Returns the Host header used.
async fn put_via_raw_http(
    gateway: &GatewayProcess,
    key: &(String, String),
    bucket: &str,
    name: &str,
    body: &[u8],
) -> String {
    let url = presigned(&gateway.endpoint, key, "PUT", bucket, name);
    let (path, host) = target(&url);
    let mut stream = TcpStream::connect(s3_addr(gateway)).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buf))
            .await
            .expect("the upload was answered")
            .unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    host
}

/// An upload that stalls: a presigned PUT declaring a 1 MiB body sends its head and a few
/// bytes, then nothing. The gateway gives up once no byte has come for its body idle
/// timeout (1 s here): it answers `400 RequestTimeout`, closes the connection (giving back
/// the client's connection slot) and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_inside_an_upload_body_is_cut_off_and_nothing_is_stored() {
    const IDLE: Duration = Duration::from_secs(1);
    let (cluster, gateway, key) = s3_cluster(&["--body-idle-timeout-ms", "1000"]);
    let url = presigned(&gateway.endpoint, &key, "PUT", "data", "stalled");
    let (path, host) = target(&url);
    let mut stream = TcpStream::connect(s3_addr(&gateway)).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n",
        1 << 20
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[7u8; 100]).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(IDLE + PROMPTLY, stream.read_to_end(&mut answer)).await;
    let waited = started.elapsed();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "the stalled upload's connection was still open after {waited:?} ({answer})"
    );
    assert!(
        waited >= IDLE / 2,
        "cut off after {waited:?}, before the timeout"
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("<Code>RequestTimeout</Code>"), "{answer}");

    let object = tokio::task::spawn_blocking(move || cluster.object("data", "stalled"))
        .await
        .unwrap();
    assert!(object.is_none(), "a stalled upload was stored: {object:?}");
}

/// A client that asks one thing and then keeps its connection open saying nothing, over
/// HTTP/1.1 keep-alive and over HTTP/2 (prior knowledge, answering the gateway's pings as
/// a live client does): the gateway closes both once they have been idle for its header
/// timeout (2 s here), HTTP/2 with a GOAWAY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_left_idle_after_one_request_is_closed_over_http1_and_http2() {
    const IDLE: Duration = Duration::from_secs(2);
    let dir = tempfile::tempdir().unwrap();
    let (_gateway, addr) = lone_gateway(dir.path(), &["--header-timeout-ms", "2000"]);

    let http1 = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        assert!(health(&mut stream).await.starts_with("HTTP/1.1 200"));
        closed_within(&mut stream, IDLE + PROMPTLY).await
    });
    let http2 = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        h2_idle_after_one_request(&mut stream, IDLE + PROMPTLY).await
    });
    let http1 = http1.await.unwrap();
    let (answered, goaway, http2) = http2.await.unwrap();
    let http1 = http1.expect("an idle HTTP/1.1 connection was kept open");
    assert!(http1 >= IDLE / 2, "HTTP/1.1 closed after {http1:?}");
    assert!(answered, "the HTTP/2 request was never answered");
    let http2 = http2.expect("an idle HTTP/2 connection was kept open");
    assert!(http2 >= IDLE / 2, "HTTP/2 closed after {http2:?}");
    assert!(goaway, "the HTTP/2 connection closed without a GOAWAY");
}

/// Speaks HTTP/2 by hand: the preface, empty settings, `GET /health` on stream 1; then
/// only acknowledges the server's settings and pings. Returns whether the answer's end
/// came, whether a GOAWAY came, and how long after the answer the connection closed
/// (`None` if still open after `limit`).
async fn h2_idle_after_one_request(
    stream: &mut TcpStream,
    limit: Duration,
) -> (bool, bool, Option<Duration>) {
    h2::start_get(stream, "/health", &[]).await;
    let (mut answered, mut goaway, mut since) = (false, false, Instant::now());
    let run = h2::serve_frames(stream, |frame| match frame {
        h2::Seen::Headers { end: true } | h2::Seen::Data { end: true, .. } => {
            answered = true;
            since = Instant::now();
        }
        h2::Seen::GoAway => goaway = true,
        _ => {}
    });
    let closed = tokio::time::timeout(limit, run).await.is_ok();
    (answered, goaway, closed.then(|| since.elapsed()))
}

/// HTTP/2 by hand, just enough to ask one GET and watch what comes back.
mod h2 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const DATA: u8 = 0;
    const HEADERS: u8 = 1;
    const SETTINGS: u8 = 4;
    const PING: u8 = 6;
    const GOAWAY: u8 = 7;
    const END_STREAM: u8 = 1;
    const ACK: u8 = 1;
    /// SETTINGS_INITIAL_WINDOW_SIZE: each stream's flow-control window at its start.
    pub const INITIAL_WINDOW_SIZE: u16 = 4;

    /// What the server sent on stream 1, or about the connection.
    pub enum Seen {
        Headers { end: bool },
        Data { len: usize, end: bool },
        GoAway,
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// Sends the preface, SETTINGS with `settings` (id, value), and `GET path` on stream 1.
    pub async fn start_get(stream: &mut TcpStream, path: &str, settings: &[(u16, u32)]) {
        // HPACK without Huffman: :method GET, :scheme http (static table entries 2 and
        // 6), :path and :authority as literals with indexed names (4 and 1).
        let mut block = vec![0x82, 0x86];
        for (index, value) in [(4u8, path), (1, "gateway")] {
            block.push(index);
            block.push(value.len() as u8);
            block.extend_from_slice(value.as_bytes());
        }
        let mut payload = Vec::new();
        for (id, value) in settings {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &payload));
        hello.extend(frame(HEADERS, 0x4 | END_STREAM, 1, &block));
        stream.write_all(&hello).await.unwrap();
    }

    /// Reads frames until the connection ends, acknowledging the server's settings and
    /// pings (and nothing else: no WINDOW_UPDATE ever), and tells `seen` of the rest.
    pub async fn serve_frames(stream: &mut TcpStream, mut seen: impl FnMut(Seen)) {
        loop {
            let mut head = [0u8; 9];
            if stream.read_exact(&mut head).await.is_err() {
                return;
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let (kind, flags) = (head[3], head[4]);
            let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len];
            if stream.read_exact(&mut payload).await.is_err() {
                return;
            }
            let end = flags & END_STREAM != 0;
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    let _ = stream.write_all(&frame(SETTINGS, ACK, 0, &[])).await;
                }
                PING if flags & ACK == 0 => {
                    let _ = stream.write_all(&frame(PING, ACK, 0, &payload)).await;
                }
                HEADERS if id == 1 => seen(Seen::Headers { end }),
                DATA if id == 1 => seen(Seen::Data { len, end }),
                GOAWAY => seen(Seen::GoAway),
                _ => {}
            }
        }
    }
}

/// An HTTP/2 client GETs a public 4 MiB object with every stream's window at zero
/// (SETTINGS_INITIAL_WINDOW_SIZE 0) and never opens it, while acknowledging the server's
/// settings and pings: its socket moves, the answer cannot. After the send-stall timeout
/// (1 s here) the gateway closes the connection and lets go of the answer and the read
/// behind it, counted in `cairn_gateway_send_stalls_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_never_opens_a_stream_s_window_is_cut_off() {
    const STALL: Duration = Duration::from_secs(1);
    const SIZE: usize = 4 << 20;
    let (_cluster, gateway, key) = s3_cluster(&["--send-stall-timeout-ms", "1000"]);
    let addr = s3_addr(&gateway);
    put_via_raw_http(&gateway, &key, "public", "big", &vec![7u8; SIZE]).await;

    let mut stream = TcpStream::connect(addr).await.unwrap();
    h2::start_get(&mut stream, "/public/big", &[(h2::INITIAL_WINDOW_SIZE, 0)]).await;
    let (mut head, mut data) = (false, 0usize);
    let started = Instant::now();
    let run = h2::serve_frames(&mut stream, |frame| match frame {
        h2::Seen::Headers { .. } => head = true,
        h2::Seen::Data { len, .. } => data += len,
        h2::Seen::GoAway => {}
    });
    let closed = tokio::time::timeout(STALL * 5 + PROMPTLY, run)
        .await
        .is_ok();
    let elapsed = started.elapsed();
    assert!(head, "the answer's head never came");
    assert_eq!(data, 0, "DATA came on a stream whose window is closed");
    assert!(closed, "the connection was still open after {elapsed:?}");
    assert!(
        elapsed >= STALL,
        "closed after {elapsed:?}, before the stall timeout"
    );
    assert_eq!(
        gateway_counter(addr, "cairn_gateway_send_stalls_total").await,
        1
    );
}

/// One address reads a public object anonymously in a loop, past its rate (1 a second,
/// 5 at once here): the requests past the burst are answered `503 SlowDown` and counted
/// in `cairn_gateway_throttled_requests_total`, and an `X-Forwarded-For` it makes up
/// changes nothing (only trusted proxies' are believed). Signed reads from the same
/// address meanwhile are all served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_reads_past_a_client_s_rate_are_slowed_down_and_signed_ones_are_not() {
    let (_cluster, gateway, key) = s3_cluster(&["--anonymous-rate", "1", "--anonymous-burst", "5"]);
    let addr = s3_addr(&gateway);
    let host = put_via_raw_http(&gateway, &key, "public", "cache-info", b"hello").await;
    let mut stream = TcpStream::connect(addr).await.unwrap();

    let anonymous = format!("GET /public/cache-info HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let (mut served, mut slowed) = (0u64, 0u64);
    let started = Instant::now();
    for _ in 0..20 {
        let answer = exchange(&mut stream, &anonymous).await;
        if answer.starts_with("HTTP/1.1 200") {
            assert!(answer.ends_with("hello"), "{answer}");
            served += 1;
        } else {
            assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
            assert!(answer.contains("<Code>SlowDown</Code>"), "{answer}");
            slowed += 1;
        }
    }
    // The burst, and one more for each second the loop took.
    let refilled = started.elapsed().as_secs() + 1;
    assert!(
        served >= 5 && served <= 5 + refilled,
        "{served} served, {slowed} slowed down in {:?}",
        started.elapsed()
    );
    let forged = format!(
        "GET /public/cache-info HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n"
    );
    let answer = exchange(&mut stream, &forged).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    slowed += 1;

    for i in 0..20 {
        let url = presigned(&gateway.endpoint, &key, "GET", "public", "cache-info");
        let (path, host) = target(&url);
        let answer = exchange(
            &mut stream,
            &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "signed read {i}: {answer}"
        );
    }
    let metrics = exchange(
        &mut stream,
        &format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    )
    .await;
    let throttled = metrics
        .lines()
        .find_map(|line| line.strip_prefix("cairn_gateway_throttled_requests_total "))
        .and_then(|value| value.trim().parse::<u64>().ok());
    assert_eq!(throttled, Some(slowed), "{metrics}");
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

/// The value of a counter in a gateway's `/metrics`, read over a fresh connection.
async fn gateway_counter(addr: SocketAddr, name: &str) -> u64 {
    metric_value(addr, name)
        .await
        .unwrap_or_else(|| panic!("no {name} at {addr}"))
}

/// The value of the series `name` (labels included) in the `/metrics` served at `addr`,
/// if it is there yet.
async fn metric_value(addr: SocketAddr, name: &str) -> Option<u64> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let metrics = exchange(
        &mut stream,
        "GET /metrics HTTP/1.1\r\nHost: cairn\r\nConnection: close\r\n\r\n",
    )
    .await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse::<u64>().ok())
}

/// One address sends requests signed with made-up access keys (a fresh one each time, then
/// one over and over), past its anonymous rate (1 a second, 5 at once here): the gateway
/// asks the coordinator about the first few only, answers the rest `503 SlowDown` without
/// asking (`cairn_gateway_access_key_lookups_total` stays bounded), and a made-up key it
/// was told of is not asked about again. Requests signed with a real key from the same
/// address meanwhile are all served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_signed_with_made_up_access_keys_are_slowed_down_before_the_coordinator() {
    let (_cluster, gateway, key) = s3_cluster(&["--anonymous-rate", "1", "--anonymous-burst", "5"]);
    let addr = s3_addr(&gateway);
    put_via_raw_http(&gateway, &key, "data", "secret", b"hello").await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let lookups_before = gateway_counter(addr, "cairn_gateway_access_key_lookups_total").await;

    let started = Instant::now();
    let (mut refused, mut slowed) = (0u64, 0u64);
    for i in 0..60 {
        // Forty distinct made-up keys, then one over and over.
        let made_up = (format!("AKMADEUP{}", i.min(40)), "not-a-secret".to_string());
        let url = presigned(&gateway.endpoint, &made_up, "GET", "data", "secret");
        let (path, host) = target(&url);
        let answer = exchange(
            &mut stream,
            &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        )
        .await;
        if answer.starts_with("HTTP/1.1 403") {
            assert!(
                answer.contains("<Code>InvalidAccessKeyId</Code>"),
                "{answer}"
            );
            refused += 1;
        } else {
            assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
            assert!(answer.contains("<Code>SlowDown</Code>"), "{answer}");
            slowed += 1;
        }
    }
    let refilled = started.elapsed().as_secs() + 1;
    assert!(
        refused <= 5 + refilled && slowed >= 60 - 5 - refilled,
        "{refused} refused, {slowed} slowed down in {:?}",
        started.elapsed()
    );

    // A real key from the same address is never slowed down.
    for i in 0..20 {
        let url = presigned(&gateway.endpoint, &key, "GET", "data", "secret");
        let (path, host) = target(&url);
        let answer = exchange(
            &mut stream,
            &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("hello"),
            "signed read {i}: {answer}"
        );
    }
    let lookups =
        gateway_counter(addr, "cairn_gateway_access_key_lookups_total").await - lookups_before;
    // The made-up keys let through, and the real key again every 5 s at most.
    let bound = 5 + refilled + started.elapsed().as_secs() / 5 + 1;
    assert!(
        lookups <= bound,
        "{lookups} access key lookups for {refused} requests let through (bound {bound})"
    );
    let throttled = gateway_counter(addr, "cairn_gateway_throttled_requests_total").await;
    assert_eq!(throttled, slowed);
}

/// A client GETs a 12 MiB object with a small receive buffer, reads the head and a few
/// bytes, then reads nothing: the gateway's writes stop making progress, and after its
/// send-stall timeout (1 s here) it closes the connection and lets go of the read (counted
/// in `cairn_gateway_send_stalls_total`). The client, reading again later, gets what was
/// already in flight and then the end, not the whole object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_an_answer_is_cut_off_by_the_gateway() {
    const STALL: Duration = Duration::from_secs(1);
    const SIZE: usize = 12 << 20;
    let (_cluster, gateway, key) = s3_cluster(&["--send-stall-timeout-ms", "1000"]);
    let addr = s3_addr(&gateway);
    put_via_raw_http(&gateway, &key, "data", "big", &vec![5u8; SIZE]).await;
    let mut buf = [0u8; 4096];

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 << 10).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let url = presigned(&gateway.endpoint, &key, "GET", "data", "big");
    let (path, host) = target(&url);
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut received = 0usize;
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(PROMPTLY, stream.read(&mut buf))
            .await
            .expect("the read was answered")
            .unwrap();
        assert!(n > 0);
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    received += head.len();
    // Reading nothing for several send-stall timeouts.
    tokio::time::sleep(STALL * 5).await;
    let ended = loop {
        match tokio::time::timeout(PROMPTLY, stream.read(&mut buf)).await {
            Ok(Ok(0)) => break "closed".to_string(),
            Ok(Ok(n)) => received += n,
            Ok(Err(err)) => break err.to_string(),
            Err(_) => break "still open".to_string(),
        }
    };
    assert!(
        received < SIZE,
        "the whole object arrived after the client stopped reading ({received} bytes, {ended})"
    );
    assert_ne!(ended, "still open", "after {received} bytes");
    assert_eq!(
        gateway_counter(addr, "cairn_gateway_send_stalls_total").await,
        1
    );
}

/// Opens `count` connections to `server` (whose key is `key`) under a fresh stranger's key
/// each, waits a moment, and returns those the server has not closed.
async fn stranger_connections(
    server: SocketAddr,
    key: &cairn_proto::identity::PublicKey,
    alpn: &[u8],
    count: usize,
) -> Vec<quinn::Connection> {
    let mut conns = Vec::new();
    for _ in 0..count {
        let stranger = SecretKey::generate();
        let endpoint = client_endpoint(any_port(), &stranger).unwrap();
        if let Ok(conn) = connect(&endpoint, &stranger, server, key, alpn).await {
            conns.push(conn);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    conns.retain(|conn| conn.close_reason().is_none());
    conns
}

/// One address opens many QUIC connections under keys nobody knows, to a node's port and
/// to the coordinator's, and sends nothing: each server keeps
/// `MAX_STRANGER_CONNECTIONS` of them and closes the rest at once. On the node a client
/// showing an order the coordinator signed stops counting as a stranger, so once a slot
/// is free a real reader from the same address is served, and the slot comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_opening_many_quic_connections_from_one_address_is_capped() {
    let over = MAX_STRANGER_CONNECTIONS + 6;

    let dir = tempfile::tempdir().unwrap();
    let cluster = support::Cluster::new();
    let node = NodeProcess::start(dir.path(), &cluster.coordinator.public(), "");
    let mut kept = stranger_connections(node.addr, &node.id, NODE_ALPN, over).await;
    assert_eq!(
        kept.len(),
        MAX_STRANGER_CONNECTIONS,
        "strangers kept by a node"
    );
    // One stranger leaves; a reader with an order takes its place and is served.
    kept.pop().unwrap().close(0u32.into(), b"bye");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let data = support::bytes(64 << 10, 4);
    let id = support::shard_id(2);
    let client = cluster.client(&node);
    client
        .put_shard(&cluster.put(node.id, id, &data), &data)
        .await
        .unwrap();
    // Known now, the reader's connection no longer counts: one more stranger fits.
    let more = stranger_connections(node.addr, &node.id, NODE_ALPN, 2).await;
    assert_eq!(more.len(), 1, "strangers kept after a reader became known");

    let cluster = TestCluster::start(&[]);
    let kept = stranger_connections(
        cluster.coordinator.quic,
        &cluster.key,
        COORDINATOR_ALPN,
        over,
    )
    .await;
    assert_eq!(
        kept.len(),
        MAX_STRANGER_CONNECTIONS,
        "strangers kept by the coordinator"
    );
    drop((client, kept));
}

/// One address starts many QUIC handshakes with a node and never finishes them: its
/// datagrams reach the node through a one-way relay, and the node's answers reach nobody,
/// so each handshake would hold the node's TLS state until its timeout. The node runs at
/// most `MAX_HANDSHAKES_PER_CLIENT` of them from that address at once and refuses the rest
/// at once (cairn_node_connections_refused_total{reason="handshakes"}), while a reader from
/// another address is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_flooding_a_node_with_handshakes_it_never_finishes_is_capped() {
    let flood = MAX_HANDSHAKES_PER_CLIENT * 3;
    let dir = tempfile::tempdir().unwrap();
    let cluster = support::Cluster::new();
    let metrics = SocketAddr::from(([127, 0, 0, 1], support::ports::free_ports(1)));
    let node = NodeProcess::start(
        dir.path(),
        &cluster.coordinator.public(),
        &format!("metrics_listen = \"{metrics}\""),
    );

    let relay = tokio::net::UdpSocket::bind(any_port()).await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let stranger = SecretKey::generate();
    let endpoint = client_endpoint(any_port(), &stranger).unwrap();
    let from = endpoint.local_addr().unwrap();
    let node_addr = node.addr;
    let forward = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((len, sender)) = relay.recv_from(&mut buf).await {
            if sender == from {
                let _ = relay.send_to(&buf[..len], node_addr).await;
            }
        }
    });
    let node_key = node.id;
    let attempts: Vec<_> = (0..flood)
        .map(|_| {
            let (endpoint, stranger) = (endpoint.clone(), stranger.clone());
            tokio::spawn(async move {
                connect(&endpoint, &stranger, relay_addr, &node_key, NODE_ALPN).await
            })
        })
        .collect();

    let name = "cairn_node_connections_refused_total{reason=\"handshakes\"}";
    let wanted = (flood - MAX_HANDSHAKES_PER_CLIENT) as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refused = None;
    while Instant::now() < deadline {
        refused = metric_value(metrics, name).await;
        if refused >= Some(wanted) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An attempt the client sends again after its refusal is refused again, so more may
    // be counted; without the cap none would be.
    assert!(
        refused >= Some(wanted),
        "{refused:?} handshakes refused of {flood} never finished from one address"
    );

    // A reader from another address is served while the flood's handshakes are held.
    let reader = client_endpoint("127.0.0.2:0".parse().unwrap(), &cluster.gateway).unwrap();
    let client =
        cairn_client::node::NodeClient::new(reader, cluster.gateway.clone(), node.addr, node.id);
    let data = support::bytes(64 << 10, 9);
    let id = support::shard_id(9);
    client
        .put_shard(&cluster.put(node.id, id, &data), &data)
        .await
        .unwrap();
    forward.abort();
    for attempt in attempts {
        attempt.abort();
    }
}
