//! The node's QUIC service: one bi-directional stream per request, each carrying an order
//! signed by the coordinator that is checked before anything else happens.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cairn_proto::identity::{NodeId, PublicKey, SecretKey};
use cairn_proto::order::{Action, Order, OrderError, Receipt, SignedOrder, SignedReceipt};
use cairn_proto::transport::{
    Admission, HandshakeGate, MAX_STRANGER_CONNECTIONS, StrangerCap, StrangerSlot, peer_key,
};
use cairn_proto::wire::{
    ErrorCode, MAX_NODE_REQUEST, NodeRequest, NodeResponse, WireError, read_frame_within,
    write_frame,
};
use quinn::{RecvStream, SendStream};
use tokio::sync::Semaphore;

use crate::bandwidth::Bandwidth;
use crate::conduct::{Answer, Conduct};
use crate::metrics::NodeMetrics;
use crate::store::{ShardStore, StoreError};

/// How long a client may take to send a request header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an upload may stall between two chunks before it is abandoned.
const BODY_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes moved per bandwidth-limiter call: small enough to keep the cap smooth.
const IO_CHUNK: usize = 1 << 20;
/// Most ranges one audit may ask for, and most bytes all of them may cover: an audit is a
/// spot check, and its answer must fit one frame.
const MAX_AUDIT_RANGES: usize = 64;
const MAX_AUDIT_BYTES: u64 = 512 * 1024;
/// Shard ids per inventory frame (16 bytes each, well inside one frame).
const INVENTORY_PAGE: usize = 32 * 1024;

/// Everything a request handler needs, shared by all connections.
pub struct NodeState {
    /// The node's identity key: signs receipts, and is its TLS identity.
    pub key: SecretKey,
    /// The node's id (its public key).
    pub id: NodeId,
    /// The only key whose orders are obeyed.
    pub coordinator: PublicKey,
    /// Shard bytes and index.
    pub store: Arc<ShardStore>,
    /// Prometheus metrics.
    pub metrics: Arc<NodeMetrics>,
    /// Cap on bytes sent.
    pub upload: Bandwidth,
    /// Cap on bytes received.
    pub download: Bandwidth,
    /// Bounds concurrent uploads, and so the memory they hold.
    pub puts: Semaphore,
    /// Largest shard accepted.
    pub max_shard_size: u64,
    /// How long one write of an answer may wait for the reader before the stream is reset:
    /// a reader that stops reading would otherwise hold the answer's buffer (up to a whole
    /// shard) and the task for ever.
    pub send_stall: Duration,
    /// The coordinator's clock, which order expiries are checked against.
    pub clock: Arc<crate::clock::Clock>,
    /// How honestly to answer: [`crate::conduct::Honest`] except in chaos tests.
    pub conduct: Arc<dyn Conduct>,
}

/// Why a request was refused: sent back to the client as [`NodeResponse::Error`].
#[derive(Debug)]
struct Refusal {
    code: ErrorCode,
    message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<OrderError> for Refusal {
    fn from(err: OrderError) -> Self {
        let code = match err {
            OrderError::BadSignature => ErrorCode::BadSignature,
            OrderError::WrongNode => ErrorCode::WrongNode,
            OrderError::WrongClient => ErrorCode::WrongClient,
            OrderError::Expired => ErrorCode::Expired,
        };
        Refusal::new(code, err.to_string())
    }
}

impl From<StoreError> for Refusal {
    fn from(err: StoreError) -> Self {
        let code = match &err {
            StoreError::OverQuota { .. } => ErrorCode::OverQuota,
            StoreError::RootMismatch { .. } => ErrorCode::RootMismatch,
            StoreError::SizeMismatch { .. } => ErrorCode::SizeMismatch,
            StoreError::NotFound(_) => ErrorCode::NotFound,
            StoreError::Damaged(_) => ErrorCode::Damaged,
            StoreError::BadRange { .. } => ErrorCode::BadRange,
            StoreError::Conflict(_) => ErrorCode::RootMismatch,
            StoreError::Io(_) | StoreError::Db(_) => ErrorCode::Internal,
        };
        Refusal::new(code, err.to_string())
    }
}

/// Accepts connections until the endpoint is closed.
pub async fn serve(endpoint: quinn::Endpoint, state: Arc<NodeState>) {
    let strangers = StrangerCap::new(MAX_STRANGER_CONNECTIONS);
    let handshakes = HandshakeGate::new();
    while let Some(incoming) = endpoint.accept().await {
        let (state, strangers, handshakes) = (state.clone(), strangers.clone(), handshakes.clone());
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match handshakes.admit(incoming).await {
                Admission::Connected(conn) => serve_connection(conn, state, &strangers).await,
                Admission::Refused => {
                    let refused = &state.metrics.connections_refused;
                    refused.with_label_values(&["handshakes"]).inc();
                    tracing::debug!(%remote, "too many handshakes from one address; refused");
                }
                Admission::Retried => tracing::debug!(%remote, "asked to validate its address"),
                Admission::Failed => tracing::debug!(%remote, "handshake failed or too slow"),
            }
        });
    }
}

async fn serve_connection(
    conn: quinn::Connection,
    state: Arc<NodeState>,
    strangers: &Arc<StrangerCap>,
) {
    let Some(peer) = peer_key(&conn) else {
        conn.close(1u32.into(), b"no peer identity");
        return;
    };
    let remote = conn.remote_address();
    tracing::debug!(%remote, %peer, "connection");
    // A stranger's connection holds little unread data until the peer is known: the
    // coordinator at once, anyone else once it shows an order the coordinator signed for
    // it and this node. Until then it counts toward its address's cap of strangers.
    let slot = if peer == state.coordinator {
        None
    } else {
        let Some(slot) = strangers.admit(remote.ip()) else {
            tracing::info!(%remote, %peer, "too many connections of strangers from one address; closing");
            let refused = &state.metrics.connections_refused;
            refused.with_label_values(&["strangers"]).inc();
            conn.close(2u32.into(), b"too many connections from your address");
            return;
        };
        Some(Arc::new(slot))
    };
    let known = Arc::new(AtomicBool::new(false));
    if peer == state.coordinator {
        trust(&conn, &known, None);
    }
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let (state, conn, known) = (state.clone(), conn.clone(), known.clone());
                let slot = slot.clone();
                tokio::spawn(async move {
                    serve_stream(&state, peer, send, recv, |request| {
                        if !known.load(Ordering::Relaxed)
                            && order_of(request)
                                .verify(&state.coordinator)
                                .is_ok_and(|order| order.client == peer && order.node == state.id)
                        {
                            trust(&conn, &known, slot.as_deref());
                        }
                    })
                    .await
                });
            }
            Err(err) => {
                tracing::debug!(%peer, %err, "connection closed");
                return;
            }
        }
    }
}

/// The order a request carries.
fn order_of(request: &NodeRequest) -> &SignedOrder {
    match request {
        NodeRequest::PutShard { order }
        | NodeRequest::GetShard { order, .. }
        | NodeRequest::Audit { order, .. }
        | NodeRequest::DeleteShard { order }
        | NodeRequest::Inventory { order } => order,
    }
}

/// Gives `conn` a known peer's windows, once, and stops counting it as a stranger's.
fn trust(conn: &quinn::Connection, known: &AtomicBool, slot: Option<&StrangerSlot>) {
    if !known.swap(true, Ordering::Relaxed) {
        cairn_proto::transport::trust_peer(conn);
        if let Some(slot) = slot {
            slot.release();
        }
    }
}

/// Serves one request; `decoded` sees it first, before the order is checked.
async fn serve_stream(
    state: &NodeState,
    peer: PublicKey,
    mut send: SendStream,
    mut recv: RecvStream,
    decoded: impl FnOnce(&NodeRequest),
) {
    // Anyone may open a stream, and the order that says who may ask is inside the frame:
    // so the frame is read under the size of the largest request, not of any frame, and
    // an oversized announcement is refused from its 4-byte prefix alone.
    let read = read_frame_within::<_, NodeRequest>(&mut recv, MAX_NODE_REQUEST);
    let request = match tokio::time::timeout(HEADER_TIMEOUT, read).await {
        Ok(Ok(request)) => request,
        Ok(Err(err)) => {
            let code = match err {
                WireError::TooLarge { .. } => ErrorCode::TooLarge,
                _ => ErrorCode::Malformed,
            };
            let refusal = Refusal::new(code, format!("unreadable request: {err}"));
            finish(state, "unknown", &mut send, Err(refusal)).await;
            return;
        }
        Err(_) => {
            let refusal = Refusal::new(ErrorCode::Malformed, "no request within 30 s");
            finish(state, "unknown", &mut send, Err(refusal)).await;
            return;
        }
    };
    decoded(&request);
    let (op, result) = match request {
        NodeRequest::PutShard { order } => {
            ("put", put(state, peer, &order, &mut send, &mut recv).await)
        }
        NodeRequest::GetShard { order, range } => {
            ("get", get(state, peer, &order, range, &mut send).await)
        }
        NodeRequest::Audit { order, ranges } => {
            ("audit", audit(state, peer, &order, ranges, &mut send).await)
        }
        NodeRequest::DeleteShard { order } => {
            ("delete", delete(state, peer, &order, &mut send).await)
        }
        NodeRequest::Inventory { order } => {
            ("inventory", inventory(state, peer, &order, &mut send).await)
        }
    };
    finish(state, op, &mut send, result).await;
}

/// Reports a refusal (if any) to the client and in the metrics, then closes the stream.
async fn finish(state: &NodeState, op: &str, send: &mut SendStream, result: Result<(), Refusal>) {
    match result {
        Ok(()) => state.metrics.requests.with_label_values(&[op, "ok"]).inc(),
        Err(refusal) => {
            let code = refusal.code.to_string();
            state
                .metrics
                .requests
                .with_label_values(&[op, code.as_str()])
                .inc();
            tracing::info!(op, code = %code, message = %refusal.message, "request refused");
            let response = NodeResponse::Error {
                code: refusal.code,
                message: refusal.message,
            };
            let _ = tokio::time::timeout(state.send_stall, write_frame(send, &response)).await;
        }
    }
    let _ = send.finish();
}

/// Checks an order's signature, recipient, client and expiry, then burns its serial.
///
/// `durable` makes the serial survive a crash; reads skip the fsync because replaying a
/// read order gains nothing a fresh one would not.
async fn authorize<'a>(
    state: &NodeState,
    peer: PublicKey,
    signed: &'a SignedOrder,
    durable: bool,
) -> Result<&'a Order, Refusal> {
    let order = signed.verify(&state.coordinator)?;
    let now = state.clock.now_unix();
    order.check(&state.id, &peer, now)?;
    let store = state.store.clone();
    let (serial, expires_at) = (order.serial, order.expires_at);
    let fresh =
        blocking(move || store.record_serial_at(serial, expires_at, durable, now)).await??;
    if !fresh {
        return Err(Refusal::new(
            ErrorCode::Replayed,
            format!("order serial {serial} was already used"),
        ));
    }
    Ok(order)
}

async fn put(
    state: &NodeState,
    peer: PublicKey,
    signed: &SignedOrder,
    send: &mut SendStream,
    recv: &mut RecvStream,
) -> Result<(), Refusal> {
    let order = authorize(state, peer, signed, true).await?;
    let Action::Put { shard, root, size } = order.action else {
        return Err(Refusal::new(
            ErrorCode::WrongAction,
            "PutShard needs a put order",
        ));
    };
    if size > state.max_shard_size {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            format!(
                "shard of {size} bytes exceeds this node's limit of {}",
                state.max_shard_size
            ),
        ));
    }
    // Quota first: an upload that cannot fit is refused before a byte of it is read.
    let reservation = state.store.reserve(size)?;
    let _permit = state
        .puts
        .acquire()
        .await
        .map_err(|_| Refusal::new(ErrorCode::Internal, "node is shutting down"))?;
    let bytes = receive_body(state, recv, size).await?;
    let store = state.store.clone();
    let meta = blocking(move || store.put(reservation, shard, root, &bytes)).await??;
    state.metrics.received_bytes.inc_by(size);
    state.metrics.stored_bytes.set(state.store.used() as i64);
    state
        .metrics
        .stored_shards
        .set(state.store.shard_count() as i64);
    let receipt = SignedReceipt::sign(
        Receipt {
            node: state.id,
            shard,
            root,
            size,
            serial: order.serial,
            stored_at: meta.stored_at,
        },
        &state.key,
    );
    tracing::debug!(%shard, size, "stored shard");
    // Dropped before the receipt is sent, so a client that reads right after its put
    // already finds the bytes gone.
    if state.conduct.drop_after_receipt(shard, root, size) {
        let store = state.store.clone();
        match blocking(move || store.delete(shard)).await? {
            Ok(_) => tracing::debug!(%shard, "conduct dropped the shard after its receipt"),
            Err(err) => tracing::warn!(%shard, %err, "conduct could not drop the shard"),
        }
        state.metrics.stored_bytes.set(state.store.used() as i64);
        state
            .metrics
            .stored_shards
            .set(state.store.shard_count() as i64);
    }
    reply(state, send, &NodeResponse::Stored { receipt }).await
}

/// Reads exactly `size` body bytes, at the download cap, and refuses short or long bodies.
async fn receive_body(
    state: &NodeState,
    recv: &mut RecvStream,
    size: u64,
) -> Result<Vec<u8>, Refusal> {
    let size_usize =
        usize::try_from(size).map_err(|_| Refusal::new(ErrorCode::TooLarge, "shard too large"))?;
    let mut bytes = Vec::with_capacity(size_usize);
    while bytes.len() < size_usize {
        let want = (size_usize - bytes.len()).min(IO_CHUNK);
        let chunk = tokio::time::timeout(BODY_STALL_TIMEOUT, recv.read_chunk(want, true))
            .await
            .map_err(|_| Refusal::new(ErrorCode::Malformed, "upload stalled"))?
            .map_err(|err| Refusal::new(ErrorCode::Malformed, format!("upload failed: {err}")))?;
        let Some(chunk) = chunk else {
            return Err(Refusal::new(
                ErrorCode::SizeMismatch,
                format!("upload ended after {} of {size} bytes", bytes.len()),
            ));
        };
        state.download.take(chunk.bytes.len() as u64).await;
        bytes.extend_from_slice(&chunk.bytes);
    }
    let extra = tokio::time::timeout(BODY_STALL_TIMEOUT, recv.read_chunk(1, true))
        .await
        .map_err(|_| Refusal::new(ErrorCode::Malformed, "upload not finished"))?
        .map_err(|err| Refusal::new(ErrorCode::Malformed, format!("upload failed: {err}")))?;
    if extra.is_some() {
        return Err(Refusal::new(
            ErrorCode::SizeMismatch,
            format!("upload is longer than the order's {size} bytes"),
        ));
    }
    Ok(bytes)
}

/// Looks up a shard and checks that it is the one the order names.
async fn held(
    state: &NodeState,
    shard: cairn_proto::ids::ShardId,
    root: cairn_erasure::ShardRoot,
    size: u64,
) -> Result<(), Refusal> {
    let store = state.store.clone();
    let meta = blocking(move || store.meta(shard)).await??;
    match meta {
        None => Err(Refusal::new(
            ErrorCode::NotFound,
            format!("shard {shard} is not held here"),
        )),
        Some(meta) if meta.root != root || meta.size != size => Err(Refusal::new(
            ErrorCode::RootMismatch,
            format!("shard {shard} held here has another root or size than the order's"),
        )),
        Some(_) => Ok(()),
    }
}

async fn get(
    state: &NodeState,
    peer: PublicKey,
    signed: &SignedOrder,
    range: Option<Range<u64>>,
    send: &mut SendStream,
) -> Result<(), Refusal> {
    let order = authorize(state, peer, signed, false).await?;
    let Action::Get { shard, root, size } = order.action else {
        return Err(Refusal::new(
            ErrorCode::WrongAction,
            "GetShard needs a get order",
        ));
    };
    if let Some(code) = state.conduct.refuse(Answer::Get, shard) {
        return Err(Refusal::new(code, "refused"));
    }
    held(state, shard, root, size).await?;
    let range = range.unwrap_or(0..size);
    let mut proof = if size == 0 && range.is_empty() {
        Vec::new()
    } else {
        prove(state, shard, range.clone()).await?
    };
    state.conduct.tamper(Answer::Get, shard, &mut proof);
    let header = NodeResponse::Shard {
        range,
        proof_len: proof.len() as u64,
    };
    reply(state, send, &header).await?;
    // Handed to quinn as shared slices of one buffer: `write_all` would copy every byte of
    // the shard into the stream's send buffer first.
    let proof = bytes::Bytes::from(proof);
    for start in (0..proof.len()).step_by(IO_CHUNK) {
        let chunk = proof.slice(start..proof.len().min(start + IO_CHUNK));
        let len = chunk.len() as u64;
        state.upload.take(len).await;
        match tokio::time::timeout(state.send_stall, send.write_chunk(chunk)).await {
            Ok(written) => {
                written.map_err(|err| Refusal::new(ErrorCode::Internal, err.to_string()))?
            }
            Err(_) => return Err(stalled(state, send)),
        }
        state.metrics.sent_bytes.inc_by(len);
    }
    Ok(())
}

/// QUIC error code of a stream reset because its reader stopped reading.
const STALLED_READER: u32 = 7;

/// Gives up on a reader that stopped reading: resets the stream, so its buffered bytes are
/// dropped and the reader learns at once, and refuses the request.
fn stalled(state: &NodeState, send: &mut SendStream) -> Refusal {
    let _ = send.reset(STALLED_READER.into());
    Refusal::new(
        ErrorCode::Busy,
        format!(
            "the reader took no bytes for {:?}; the answer was abandoned",
            state.send_stall
        ),
    )
}

/// A slice proof from the store; a damaged shard is counted as well as refused.
async fn prove(
    state: &NodeState,
    shard: cairn_proto::ids::ShardId,
    range: Range<u64>,
) -> Result<Vec<u8>, Refusal> {
    let store = state.store.clone();
    let result = blocking(move || store.prove(shard, range)).await?;
    if let Err(StoreError::Damaged(_)) = &result {
        state.metrics.verification_failures.inc();
        tracing::warn!(%shard, "stored shard is damaged");
        crate::scrub::refresh_damaged(&state.store, &state.metrics).await;
    }
    Ok(result?)
}

async fn audit(
    state: &NodeState,
    peer: PublicKey,
    signed: &SignedOrder,
    ranges: Vec<Range<u64>>,
    send: &mut SendStream,
) -> Result<(), Refusal> {
    let order = authorize(state, peer, signed, false).await?;
    let Action::Audit { shard, root, size } = order.action else {
        return Err(Refusal::new(
            ErrorCode::WrongAction,
            "Audit needs an audit order",
        ));
    };
    if let Some(code) = state.conduct.refuse(Answer::Audit, shard) {
        return Err(Refusal::new(code, "refused"));
    }
    let total: u64 = ranges.iter().map(|r| r.end.saturating_sub(r.start)).sum();
    if ranges.is_empty() || ranges.len() > MAX_AUDIT_RANGES || total > MAX_AUDIT_BYTES {
        return Err(Refusal::new(
            ErrorCode::BadRange,
            format!(
                "an audit asks for 1 to {MAX_AUDIT_RANGES} ranges of at most {MAX_AUDIT_BYTES} bytes in all"
            ),
        ));
    }
    let mut proofs = match held(state, shard, root, size).await {
        Ok(()) => {
            let mut proofs = Vec::with_capacity(ranges.len());
            for range in ranges {
                proofs.push(prove(state, shard, range).await?);
            }
            proofs
        }
        Err(refusal) if refusal.code == ErrorCode::NotFound => {
            let Some(bytes) = state.conduct.audit_bytes(shard, root, size).await else {
                return Err(refusal);
            };
            blocking(move || prove_supplied(&bytes, ranges)).await??
        }
        Err(refusal) => return Err(refusal),
    };
    for proof in &mut proofs {
        state.conduct.tamper(Answer::Audit, shard, proof);
    }
    state.conduct.delay_audit(shard).await;
    let bytes: u64 = proofs.iter().map(|p| p.len() as u64).sum();
    state.upload.take(bytes).await;
    state.metrics.sent_bytes.inc_by(bytes);
    reply(state, send, &NodeResponse::Audit { proofs }).await
}

/// Slice proofs of `ranges` over bytes a conduct supplied for a shard the node lacks: the
/// outboard is computed from those bytes, so the proofs verify only if they are the shard's.
fn prove_supplied(bytes: &[u8], ranges: Vec<Range<u64>>) -> Result<Vec<Vec<u8>>, Refusal> {
    let outboard = cairn_erasure::slice::SliceOutboard::compute(bytes);
    ranges
        .into_iter()
        .map(|range| {
            outboard
                .prove(bytes, range)
                .map(|proof| proof.into_bytes())
                .map_err(|err| Refusal::new(ErrorCode::BadRange, err.to_string()))
        })
        .collect()
}

async fn delete(
    state: &NodeState,
    peer: PublicKey,
    signed: &SignedOrder,
    send: &mut SendStream,
) -> Result<(), Refusal> {
    let order = authorize(state, peer, signed, true).await?;
    let Action::Delete { shard } = order.action else {
        return Err(Refusal::new(
            ErrorCode::WrongAction,
            "DeleteShard needs a delete order",
        ));
    };
    let store = state.store.clone();
    let stored = blocking(move || store.delete(shard)).await??;
    // Evaluated even when the store had it, so a conduct never keeps a stale claim.
    let claimed = state.conduct.release_claim(shard);
    let existed = stored || claimed;
    state.metrics.stored_bytes.set(state.store.used() as i64);
    state
        .metrics
        .stored_shards
        .set(state.store.shard_count() as i64);
    reply(state, send, &NodeResponse::Deleted { existed }).await
}

async fn inventory(
    state: &NodeState,
    peer: PublicKey,
    signed: &SignedOrder,
    send: &mut SendStream,
) -> Result<(), Refusal> {
    let order = authorize(state, peer, signed, false).await?;
    let Action::Inventory = order.action else {
        return Err(Refusal::new(
            ErrorCode::WrongAction,
            "Inventory needs an inventory order",
        ));
    };
    let store = state.store.clone();
    let mut shards = blocking(move || store.inventory()).await??;
    let claimed = state.conduct.claimed_shards();
    if !claimed.is_empty() {
        shards.extend(claimed);
        shards.sort_unstable();
        shards.dedup();
    }
    // Pages of one frame each; the last says there is no more.
    let mut pages = shards.chunks(INVENTORY_PAGE).peekable();
    if pages.peek().is_none() {
        let empty = NodeResponse::Inventory {
            shards: Vec::new(),
            more: false,
        };
        return reply(state, send, &empty).await;
    }
    while let Some(page) = pages.next() {
        let response = NodeResponse::Inventory {
            shards: page.to_vec(),
            more: pages.peek().is_some(),
        };
        reply(state, send, &response).await?;
    }
    Ok(())
}

/// Sends a response frame; a client gone mid-answer, or one that stopped reading, is the
/// only way this fails.
async fn reply(
    state: &NodeState,
    send: &mut SendStream,
    response: &NodeResponse,
) -> Result<(), Refusal> {
    match tokio::time::timeout(state.send_stall, write_frame(send, response)).await {
        Ok(written) => written.map_err(|err| Refusal::new(ErrorCode::Internal, err.to_string())),
        Err(_) => Err(stalled(state, send)),
    }
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| Refusal::new(ErrorCode::Internal, format!("store task failed: {err}")))
}
