//! QUIC endpoints whose TLS identity is the peer's ed25519 key.
//!
//! Peers authenticate with RFC 7250 raw public keys: the "certificate" each side sends is
//! just its key's SubjectPublicKeyInfo, and the other side pins or filters on the key
//! itself. There is no X.509, no CA and no name checking; the handshake signature still
//! proves the peer holds the secret key. TLS 1.3 only, ed25519 only, and mutual: servers
//! always require a client key.
//!
//! Session resumption is off on both sides. A resumed TLS 1.3 session skips the peer's key
//! entirely, so a client reusing a ticket could be "pinned" to whichever server issued it,
//! and a server could keep admitting a client its policy has since dropped.
//!
//! **Client-auth asymmetry.** In TLS 1.3 the client finishes its handshake before the
//! server has checked the client's key. A client the server refuses therefore sees
//! [`connect`] succeed; the refusal surfaces on its first stream operation (typically as
//! a connection lost with a TLS alert). Callers should report stream errors right after
//! connecting as possible authentication failures.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{AlwaysResolvesClientRawPublicKeys, Resumption};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{
    CertificateDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{AlwaysResolvesServerRawPublicKeys, NoServerSessionStorage};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, PeerIncompatible, PeerMisbehaved,
    SignatureScheme,
};

use crate::identity::{PublicKey, SecretKey, wipe};

/// The TLS server name clients send. Pinning makes it meaningless, but QUIC requires a
/// syntactically valid DNS name, which a key's hex or base32 form is not always.
pub const SERVER_NAME: &str = "cairn";

/// How long a connection may be silent before it is dropped (also bounds the handshake).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often an idle connection pings, well inside [`IDLE_TIMEOUT`] so healthy idle
/// connections (a node's link to the coordinator) stay up.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Per-stream receive window: a multi-MiB shard flows without waiting for window updates
/// on every round trip.
const STREAM_WINDOW: u32 = 16 << 20;
/// Per-connection receive window, room for several shard streams at once.
const CONNECTION_WINDOW: u32 = 64 << 20;
/// Bytes we may have in flight unacknowledged on one connection.
const SEND_WINDOW: u64 = 64 << 20;
/// Requests one peer may have open at once; each request is one bidirectional stream.
///
/// quinn takes this per endpoint, before the handshake settles the ALPN, so it must fit
/// every protocol an endpoint serves: Raft and node heartbeats use a few streams, a
/// gateway about two per coordinator call in flight (the call and its liveness probe) and
/// a few per node it sends shards to. A lower value would not turn load away but queue it
/// in the client's `open_bi`, where the coordinator client's liveness probe would take a
/// busy leader for a dead one. What a stream can cost a server is bounded by each
/// protocol's request frame limit and read deadline instead (and the gateway RPC reads no
/// stream of a key it has not registered).
const MAX_BIDI_STREAMS: u32 = 256;

/// Receive window a server gives a connection until it knows the peer ([`trust_peer`]):
/// room for a few request frames (a node's are at most 16 KiB, a join 4 KiB), not for
/// megabytes of unread data a stranger could park in streams nobody accepts.
pub const STRANGER_WINDOW: u32 = 128 << 10;
/// Bidirectional streams a peer not yet known may have open at once.
pub const STRANGER_STREAMS: u32 = 8;

/// DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 }, BIT STRING (0 unused bits) }. The key is the 32 bytes after it, so the
/// SPKI is exactly 44 bytes and needs no parser.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Which client keys a server admits.
#[derive(Clone)]
pub enum PeerPolicy {
    /// Any ed25519 key; the handshake still proves the client holds its secret. For
    /// servers where orders, not connections, carry the permission (nodes).
    Any,
    /// Only keys the predicate accepts (for example the coordinator's registered nodes).
    /// It runs inside the handshake on quinn's driver task, so it must be quick and must
    /// not block.
    Allow(Arc<dyn Fn(&PublicKey) -> bool + Send + Sync>),
}

impl PeerPolicy {
    fn admits(&self, key: &PublicKey) -> bool {
        match self {
            Self::Any => true,
            Self::Allow(allow) => allow(key),
        }
    }
}

impl fmt::Debug for PeerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("Any"),
            Self::Allow(_) => f.write_str("Allow(..)"),
        }
    }
}

/// Why an endpoint could not be set up or a connection made.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The TLS configuration could not be built (a bug or an unusable key, not the peer).
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The UDP socket could not be bound (or no tokio runtime is running).
    #[error("cannot bind QUIC endpoint: {0}")]
    Bind(#[source] std::io::Error),
    /// The connection could not be made: unreachable, timed out, ALPN mismatch, refused by
    /// the server, or a handshake failure.
    #[error("QUIC connection failed: {0}")]
    Connect(String),
    /// The server proved a different key than the one we pinned.
    #[error("peer is {found}, expected {expected}")]
    WrongPeer {
        /// The key we pinned.
        expected: PublicKey,
        /// The key the server presented.
        found: PublicKey,
    },
}

/// A QUIC endpoint that accepts connections on `listen` speaking any of `alpns` (see
/// [`negotiated_alpn`]), presenting `key` and admitting clients by `clients`.
///
/// Clients must present a key (mutual authentication); read it with [`peer_key`]. The
/// endpoint can also make outgoing connections with [`connect`]. Must be called inside a
/// tokio runtime.
pub fn server_endpoint(
    listen: SocketAddr,
    key: &SecretKey,
    alpns: &[&[u8]],
    clients: PeerPolicy,
) -> Result<quinn::Endpoint, TransportError> {
    let provider = provider();
    let verifier = Arc::new(ClientKeyVerifier {
        policy: clients,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(AlwaysResolvesServerRawPublicKeys::new(
            certified_key(key)?,
        )));
    tls.alpn_protocols = alpns.iter().map(|alpn| alpn.to_vec()).collect();
    tls.session_storage = Arc::new(NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    tls.max_early_data_size = 0;

    let crypto = QuicServerConfig::try_from(tls).map_err(tls_error)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(stranger_transport_config());
    // Datagrams quinn buffers for connections the accept loop has not taken yet: the loop
    // takes each at once, so these bound only a burst, not a peer's patience.
    config
        .max_incoming(MAX_INCOMING)
        .incoming_buffer_size(INCOMING_BUFFER)
        .incoming_buffer_size_total(INCOMING_BUFFER_TOTAL);
    let socket = std::net::UdpSocket::bind(listen).map_err(TransportError::Bind)?;
    let runtime = quinn::default_runtime().ok_or_else(|| {
        TransportError::Bind(std::io::Error::other(
            "no async runtime for the QUIC endpoint",
        ))
    })?;
    quinn::Endpoint::new(endpoint_config(key)?, Some(config), socket, runtime)
        .map_err(TransportError::Bind)
}

/// Context of the stateless-reset key, derived from the endpoint's own key.
const RESET_KEY_CONTEXT: &str = "cairn 2026-12 quic stateless reset key";

/// The endpoint's QUIC settings: its stateless-reset key is derived from its identity key,
/// not drawn at random per process. A peer still holding a connection to this identity's
/// previous process (a node restarted after a crash) then gets a stateless reset it can
/// verify from the first packet it sends, and redials at once, instead of waiting out
/// [`IDLE_TIMEOUT`] on a connection nobody answers.
///
/// Connection ids are not validated on arrival: quinn's default generator tags them under a
/// key drawn per process, so the restarted process would drop the old connection's
/// packets as forged ids instead of answering them with the reset.
fn endpoint_config(key: &SecretKey) -> Result<quinn::EndpointConfig, TransportError> {
    let mut secret = key.derive_key(RESET_KEY_CONTEXT);
    let hmac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
    wipe(&mut secret);
    let mut config = quinn::EndpointConfig::new(Arc::new(hmac));
    let mut cid_key = [0u8; 32];
    getrandom::fill(&mut cid_key).map_err(|err| {
        TransportError::Bind(std::io::Error::other(format!("no randomness: {err}")))
    })?;
    config.cid_generator(move || {
        Box::new(ConnectionIds {
            key: cid_key,
            next: 0,
        })
    });
    Ok(config)
}

/// Length of the connection ids this side hands out.
const CID_LEN: usize = 8;

/// Connection ids that an observer cannot link or predict: a keyed hash of a counter,
/// under a key drawn per process.
struct ConnectionIds {
    key: [u8; 32],
    next: u64,
}

impl quinn::ConnectionIdGenerator for ConnectionIds {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        self.next = self.next.wrapping_add(1);
        let hash = blake3::keyed_hash(&self.key, &self.next.to_le_bytes());
        quinn::ConnectionId::new(&hash.as_bytes()[..CID_LEN])
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// The protocol (ALPN) a connection agreed on, for servers that speak several.
pub fn negotiated_alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// A QUIC endpoint for outgoing connections only, bound to `bind` (port 0 for any).
///
/// Every connection is made with [`connect`], which pins the server's key; the endpoint
/// has no default client configuration, so an unpinned `Endpoint::connect` fails. `key`
/// is checked now so an unusable key is reported at startup rather than on first use.
/// Must be called inside a tokio runtime.
pub fn client_endpoint(
    bind: SocketAddr,
    key: &SecretKey,
) -> Result<quinn::Endpoint, TransportError> {
    certified_key(key)?;
    quinn::Endpoint::client(bind).map_err(TransportError::Bind)
}

/// Connects from `endpoint` to `addr`, presenting `key`, accepting only a server that
/// proves `expected`, speaking `alpn`.
///
/// Fails with [`TransportError::WrongPeer`] if the server holds another key. Success does
/// not yet mean the server admitted us (see the module docs on the client-auth
/// asymmetry). Gives up after [`IDLE_TIMEOUT`] without an answer.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    key: &SecretKey,
    addr: SocketAddr,
    expected: &PublicKey,
    alpn: &[u8],
) -> Result<quinn::Connection, TransportError> {
    let provider = provider();
    let verifier = Arc::new(PinnedServerVerifier {
        expected: *expected,
        seen: Mutex::new(None),
        algorithms: provider.signature_verification_algorithms,
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_client_cert_resolver(Arc::new(AlwaysResolvesClientRawPublicKeys::new(
            certified_key(key)?,
        )));
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls.resumption = Resumption::disabled();
    tls.enable_early_data = false;

    let crypto = QuicClientConfig::try_from(tls).map_err(tls_error)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport_config());

    let connecting = endpoint
        .connect_with(config, addr, SERVER_NAME)
        .map_err(|e| TransportError::Connect(e.to_string()))?;
    match connecting.await {
        Ok(conn) => match peer_key(&conn) {
            Some(found) if found == *expected => Ok(conn),
            // The verifier already refused any other key; this guards against a path that
            // skipped it (such as resumption being re-enabled by mistake).
            Some(found) => {
                conn.close(VarInt::from_u32(0), b"wrong peer");
                Err(TransportError::WrongPeer {
                    expected: *expected,
                    found,
                })
            }
            None => {
                conn.close(VarInt::from_u32(0), b"no peer key");
                Err(TransportError::Connect(
                    "server presented no ed25519 key".into(),
                ))
            }
        },
        Err(e) => match verifier.mismatch() {
            Some(found) => Err(TransportError::WrongPeer {
                expected: *expected,
                found,
            }),
            None => Err(TransportError::Connect(e.to_string())),
        },
    }
}

/// The ed25519 key the peer of `conn` proved in the handshake.
pub fn peer_key(conn: &quinn::Connection) -> Option<PublicKey> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    match certs.as_slice() {
        [spki] => key_from_spki(spki.as_ref()),
        _ => None,
    }
}

fn provider() -> Arc<CryptoProvider> {
    // ring only, passed explicitly: relying on the process-wide default panics if another
    // crate in the binary enables aws-lc-rs too.
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport_config() -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    let idle_ms = u32::try_from(IDLE_TIMEOUT.as_millis()).unwrap_or(u32::MAX);
    t.max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(idle_ms))))
        .keep_alive_interval(Some(KEEP_ALIVE))
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
        .send_window(SEND_WINDOW)
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_BIDI_STREAMS));
    Arc::new(t)
}

/// What a server grants every connection until it knows the peer: the usual settings with
/// a [`STRANGER_WINDOW`] for the whole connection (each stream's window is settled in the
/// handshake, but no stream can hold more than its connection's), [`STRANGER_STREAMS`]
/// bidirectional streams and no unidirectional ones (Cairn uses none).
fn stranger_transport_config() -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    let idle_ms = u32::try_from(IDLE_TIMEOUT.as_millis()).unwrap_or(u32::MAX);
    t.max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(idle_ms))))
        .keep_alive_interval(Some(KEEP_ALIVE))
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(STRANGER_WINDOW))
        .send_window(SEND_WINDOW)
        .max_concurrent_bidi_streams(VarInt::from_u32(STRANGER_STREAMS))
        .max_concurrent_uni_streams(VarInt::from_u32(0));
    Arc::new(t)
}

/// Gives an accepted connection the windows and streams of a known peer (a coordinator
/// member, a registered node or gateway, a client holding an order for this node), once
/// the server has checked who it is; until then it has [`STRANGER_WINDOW`] bytes and
/// [`STRANGER_STREAMS`] streams.
pub fn trust_peer(conn: &quinn::Connection) {
    conn.set_receive_window(VarInt::from_u32(CONNECTION_WINDOW));
    conn.set_max_concurrent_bi_streams(VarInt::from_u32(MAX_BIDI_STREAMS));
}

/// Connection attempts quinn keeps before the accept loop takes them (its default is
/// 65 536).
const MAX_INCOMING: usize = 4_096;
/// Early data quinn buffers per connection attempt not yet taken (default 10 MiB).
const INCOMING_BUFFER: u64 = 64 << 10;
/// Early data quinn buffers for all attempts not yet taken (default 100 MiB).
const INCOMING_BUFFER_TOTAL: u64 = 16 << 20;

/// Handshakes a server runs at once from one client (an IPv4 address or an IPv6 /64).
/// A handshake costs the server its TLS state and a retransmission timer until the idle
/// timeout, whatever the client does; honest clients open one connection at a time.
pub const MAX_HANDSHAKES_PER_CLIENT: usize = 32;
/// Handshakes in progress from all clients above which a client whose address is not
/// validated yet is asked to prove it (a QUIC Retry) before any state is kept for it, so a
/// flood from forged source addresses costs the server one packet each.
pub const RETRY_ABOVE_HANDSHAKES: usize = 256;
/// Longest a handshake may take before the server drops it.
pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// What became of a connection attempt at a [`HandshakeGate`].
#[derive(Debug)]
pub enum Admission {
    /// The handshake completed.
    Connected(quinn::Connection),
    /// Its client had [`MAX_HANDSHAKES_PER_CLIENT`] handshakes in progress: refused.
    Refused,
    /// The server asked the client to validate its address first (a Retry); an honest
    /// client comes back as a new attempt.
    Retried,
    /// The handshake failed or took longer than [`HANDSHAKE_LIMIT`].
    Failed,
}

/// Handshakes in progress, counted per client address and in all, and capped: the part of
/// a server's accept loop that runs before it knows who a peer is.
#[derive(Debug)]
pub struct HandshakeGate {
    per_client: Arc<StrangerCap>,
    in_progress: std::sync::atomic::AtomicUsize,
}

impl HandshakeGate {
    /// A gate with the default caps.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            per_client: StrangerCap::new(MAX_HANDSHAKES_PER_CLIENT),
            in_progress: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Runs `incoming`'s handshake if its client has room, within [`HANDSHAKE_LIMIT`].
    pub async fn admit(&self, incoming: quinn::Incoming) -> Admission {
        use std::sync::atomic::Ordering;
        if self.in_progress.load(Ordering::Relaxed) >= RETRY_ABOVE_HANDSHAKES
            && !incoming.remote_address_validated()
            && incoming.may_retry()
        {
            return match incoming.retry() {
                Ok(()) => Admission::Retried,
                Err(err) => {
                    err.into_incoming().refuse();
                    Admission::Refused
                }
            };
        }
        let Some(_slot) = self.per_client.admit(incoming.remote_address().ip()) else {
            incoming.refuse();
            return Admission::Refused;
        };
        self.in_progress.fetch_add(1, Ordering::Relaxed);
        // Counted down however this future ends, dropped at shutdown included.
        struct Running<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let _running = Running(&self.in_progress);
        match tokio::time::timeout(HANDSHAKE_LIMIT, incoming).await {
            Ok(Ok(conn)) => Admission::Connected(conn),
            Ok(Err(_)) | Err(_) => Admission::Failed,
        }
    }

    /// Handshakes in progress from `ip`'s client.
    pub fn in_progress_from(&self, ip: IpAddr) -> usize {
        self.per_client.open_from(ip)
    }
}

/// Connections a server holds at once from one client (an IPv4 address or an IPv6 /64)
/// before it knows their peers: each is small ([`STRANGER_WINDOW`]), and this bounds how
/// many one host can make it keep. Known peers' connections do not count.
pub const MAX_STRANGER_CONNECTIONS: usize = 16;

/// Connections from peers a server does not know yet, counted per client address and
/// capped (see [`MAX_STRANGER_CONNECTIONS`]).
#[derive(Debug)]
pub struct StrangerCap {
    per_client: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl StrangerCap {
    /// At most `per_client` connections of strangers from one client at once.
    pub fn new(per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            per_client,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more stranger's connection from `ip`, if its client holds fewer than
    /// the cap; given back when the slot is released (the peer became known) or dropped.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<StrangerSlot> {
        let client = client_of(ip);
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mine = open.entry(client).or_default();
        if *mine >= self.per_client {
            return None;
        }
        *mine += 1;
        Some(StrangerSlot {
            cap: self.clone(),
            client,
            held: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Strangers' connections open from `ip`'s client.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&client_of(ip))
            .copied()
            .unwrap_or(0)
    }
}

/// One stranger's connection counted by a [`StrangerCap`].
#[derive(Debug)]
pub struct StrangerSlot {
    cap: Arc<StrangerCap>,
    client: IpAddr,
    held: std::sync::atomic::AtomicBool,
}

impl StrangerSlot {
    /// Stops counting the connection (its peer is known now); later calls do nothing.
    pub fn release(&self) {
        if !self.held.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let mut open = self
            .cap
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(mine) = open.get_mut(&self.client) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                open.remove(&self.client);
            }
        }
    }
}

impl Drop for StrangerSlot {
    fn drop(&mut self) {
        self.release();
    }
}

/// The client an address counts for: an IPv4 address itself, an IPv6 address's /64.
fn client_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

fn tls_error(e: impl fmt::Display) -> TransportError {
    TransportError::Tls(e.to_string())
}

/// Our key as rustls' signing key plus the raw public key we present.
fn certified_key(key: &SecretKey) -> Result<Arc<CertifiedKey>, TransportError> {
    let mut der = key.pkcs8_der();
    let signer = rustls::crypto::ring::sign::any_eddsa_type(&PrivatePkcs8KeyDer::from(&der[..]));
    wipe(&mut der);
    let signer = signer.map_err(tls_error)?;
    let spki = spki(&key.public());
    // rustls' own consistency check (`keys_match`) parses X.509, so it cannot vouch for a
    // raw key; compare the SPKI ring derives from the secret with the one we present.
    if signer.public_key().as_deref() != Some(spki.as_slice()) {
        return Err(TransportError::Tls(
            "ed25519 signing key does not match its public key".into(),
        ));
    }
    Ok(Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(spki)],
        signer,
    )))
}

fn spki(key: &PublicKey) -> Vec<u8> {
    let mut der = Vec::with_capacity(44);
    der.extend_from_slice(&ED25519_SPKI_PREFIX);
    der.extend_from_slice(key.as_bytes());
    der
}

/// The key in an ed25519 SPKI; `None` for anything else (other algorithms, X.509
/// certificates, trailing bytes).
fn key_from_spki(der: &[u8]) -> Option<PublicKey> {
    let key = der.strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    let key: [u8; 32] = key.try_into().ok()?;
    Some(PublicKey::from_bytes(key))
}

fn bad_encoding() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
}

fn refused() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

/// Checks the handshake signature with the peer's raw key. This is the proof of
/// possession; only ed25519 is accepted because that is all we advertise.
fn verify_signature(
    message: &[u8],
    spki: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into());
    }
    rustls::crypto::verify_tls13_signature_with_raw_key(
        message,
        &SubjectPublicKeyInfoDer::from(spki.as_ref()),
        dss,
        algorithms,
    )
}

/// Client side: accept exactly one server key.
struct PinnedServerVerifier {
    expected: PublicKey,
    /// A different key the server presented, kept so `connect` can say `WrongPeer`
    /// instead of passing on a generic handshake failure.
    seen: Mutex<Option<PublicKey>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedServerVerifier {
    fn mismatch(&self) -> Option<PublicKey> {
        match self.seen.lock() {
            Ok(seen) => *seen,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }
}

impl fmt::Debug for PinnedServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedServerVerifier")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !intermediates.is_empty() {
            return Err(bad_encoding());
        }
        let key = key_from_spki(end_entity.as_ref()).ok_or_else(bad_encoding)?;
        if key != self.expected {
            tracing::debug!(expected = %self.expected, found = %key, "server key mismatch");
            match self.seen.lock() {
                Ok(mut seen) => *seen = Some(key),
                Err(poisoned) => *poisoned.into_inner() = Some(key),
            }
            return Err(refused());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(PeerIncompatible::Tls13RequiredForQuic.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// Server side: require a client key and filter it through the policy.
struct ClientKeyVerifier {
    policy: PeerPolicy,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for ClientKeyVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKeyVerifier")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for ClientKeyVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No CAs: an empty hint list tells clients to send whatever key they have.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if !intermediates.is_empty() {
            return Err(bad_encoding());
        }
        let key = key_from_spki(end_entity.as_ref()).ok_or_else(bad_encoding)?;
        if !self.policy.admits(&key) {
            tracing::debug!(client = %key, "client key refused by policy");
            return Err(refused());
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(PeerIncompatible::Tls13RequiredForQuic.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strangers_are_capped_per_client_and_known_peers_give_their_slot_back() {
        let cap = StrangerCap::new(2);
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let first = cap.admit(ip("192.0.2.1")).unwrap();
        let second = cap.admit(ip("192.0.2.1")).unwrap();
        assert!(cap.admit(ip("192.0.2.1")).is_none());
        assert!(cap.admit(ip("192.0.2.2")).is_some());
        let _a = cap.admit(ip("2001:db8::1")).unwrap();
        let _b = cap.admit(ip("2001:db8::2")).unwrap();
        assert!(
            cap.admit(ip("2001:db8::ffff")).is_none(),
            "a /64 is one client"
        );
        first.release();
        first.release();
        assert_eq!(cap.open_from(ip("192.0.2.1")), 1);
        let third = cap.admit(ip("192.0.2.1")).unwrap();
        drop(first);
        assert!(cap.admit(ip("192.0.2.1")).is_none());
        drop((second, third));
        assert_eq!(cap.open_from(ip("192.0.2.1")), 0);
    }

    #[test]
    fn spki_round_trip() {
        let key = SecretKey::from_seed([9; 32]).public();
        let der = spki(&key);
        assert_eq!(der.len(), 44);
        assert_eq!(key_from_spki(&der), Some(key));
        assert_eq!(key_from_spki(&der[..43]), None);
        let mut longer = der.clone();
        longer.push(0);
        assert_eq!(key_from_spki(&longer), None);
        let mut other_alg = der;
        other_alg[8] = 0x71; // OID 1.3.101.113 is Ed448
        assert_eq!(key_from_spki(&other_alg), None);
    }

    #[test]
    fn our_spki_matches_ring() {
        // rustls derives the SPKI from the signing key itself; ours must agree byte for
        // byte or peers would pin a key the handshake signature does not match.
        let key = SecretKey::from_seed([4; 32]);
        let certified = certified_key(&key).unwrap();
        let from_ring = certified.key.public_key().unwrap();
        assert_eq!(from_ring.as_ref(), spki(&key.public()).as_slice());
        assert_eq!(certified.cert[0].as_ref(), from_ring.as_ref());
    }
}
