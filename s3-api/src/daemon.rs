//! Starting a gateway: its key, the coordinator client, the S3 service and the HTTP server.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_client::coordinator::CoordinatorClient;
use cairn_proto::identity::{PublicKey, SecretKey};
use cairn_proto::transport::client_endpoint;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::task::JoinHandle;

use crate::access::{Access, AccessKeys, Auth, Host};
use crate::config::{GatewayConfig, Network};
use crate::data_path::{DataPath, Repaired, run_worker};
use crate::metrics::GatewayMetrics;
use crate::service::Gateway;
use crate::throttle::{ClientAddr, Throttle, client_address, client_of};
use crate::timeouts::{Activity, IdleBody, StallGuard};

/// File holding the gateway's identity key.
pub const KEY_FILE: &str = "gateway.key";

/// How long a client may take to send a request's head by default: from the accept for
/// the first request, from the end of the previous response for the next (so it is also how
/// long a connection may stay idle). S3 clients send a head in one write.
/// `GatewayConfig::header_timeout_ms` sets it.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections one client may hold at once (a client is an IPv4 address or an IPv6 /64,
/// what one host can easily hold). Nix opens 25 by default, the aws cli 10.
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 64;
/// Connections the gateway holds at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Connections refused with a 503 at once; past that, one over the caps is closed at once.
const MAX_REFUSING: usize = 64;
/// How long refusing one connection may take.
const REFUSAL_LIMIT: Duration = Duration::from_secs(2);
/// Bytes of a refused client's request read (and dropped) before closing.
const MAX_REFUSAL_DRAIN: usize = 64 << 10;
/// Pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A gateway that is serving.
pub struct RunningGateway {
    /// The HTTP address bound.
    pub addr: SocketAddr,
    /// The gateway's public key (what `cairn admin gateway add` registers).
    pub key: PublicKey,
    task: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
}

impl RunningGateway {
    /// Stops accepting connections and taking repair jobs.
    pub fn shutdown(self) {
        self.task.abort();
        for worker in self.workers {
            worker.abort();
        }
    }
}

/// Starts a gateway. The S3 API answers at once; requests fail with 500 until the key is
/// registered with the coordinator.
pub async fn start(config: GatewayConfig) -> Result<RunningGateway, String> {
    let coordinator_key = config.validate()?;
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|err| format!("{}: {err}", config.data_dir.display()))?;
    let (key, _) = SecretKey::load_or_create(&config.data_dir.join(KEY_FILE))
        .map_err(|err| format!("gateway key: {err}"))?;
    let endpoint = client_endpoint(SocketAddr::from(([0, 0, 0, 0], 0)), &key)
        .map_err(|err| format!("QUIC endpoint: {err}"))?;
    let coordinator = CoordinatorClient::new(
        endpoint.clone(),
        key.clone(),
        coordinator_key,
        config.coordinators.clone(),
    );
    let path = Arc::new(DataPath::new(
        coordinator,
        endpoint,
        key.clone(),
        config.inline_threshold,
    ));
    let metrics = Arc::new(GatewayMetrics::new());
    path.count_degraded_reads_in(metrics.degraded_reads.clone());
    let gateway = Gateway::new(path.clone(), metrics.clone());
    let report = gateway.reporter();
    let counted = metrics.clone();
    let done: Arc<dyn Fn(Repaired) + Send + Sync> = Arc::new(move |repaired: Repaired| {
        counted.repaired_shards.inc_by(repaired.shards as u64);
        counted.repaired_bytes.inc_by(repaired.bytes);
    });
    let workers = (0..config.repair_workers)
        .map(|_| tokio::spawn(run_worker(path.clone(), report.clone(), done.clone())))
        .collect();
    let throttle = Arc::new(Throttle::new(
        config.anonymous_rate,
        config.anonymous_burst,
        metrics.throttled.clone(),
    ));
    let keys = Arc::new(AccessKeys::new(metrics.access_key_lookups.clone()));
    let mut builder = S3ServiceBuilder::new(gateway);
    builder.set_auth(Auth::new(path.clone(), keys.clone()));
    builder.set_access(Access::new(path.clone(), throttle.clone()));
    builder.set_host(Host::new(config.domain.clone()));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|err| format!("{}: {err}", config.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|err| format!("listener: {err}"))?;
    let limits = Limits {
        header: Duration::from_millis(config.header_timeout_ms),
        body_idle: Duration::from_millis(config.body_idle_timeout_ms),
        send_stall: Duration::from_millis(config.send_stall_timeout_ms),
        proxies: config.proxies()?,
    };
    let context = Arc::new(Context {
        service,
        host: Host::new(config.domain.clone()),
        metrics,
        limits,
        throttle,
        keys,
    });
    let task = tokio::spawn(serve(listener, context));
    tracing::info!(%addr, key = %key.public(), "gateway serving S3");
    Ok(RunningGateway {
        addr,
        key: key.public(),
        task,
        workers,
    })
}

/// The time limits and proxies of [`GatewayConfig`], as the server uses them.
struct Limits {
    header: Duration,
    body_idle: Duration,
    send_stall: Duration,
    proxies: Vec<Network>,
}

/// What answering a request needs.
struct Context {
    service: S3Service,
    host: Host,
    metrics: Arc<GatewayMetrics>,
    limits: Limits,
    /// Per-client buckets for anonymous requests and those signed with keys not known.
    throttle: Arc<Throttle>,
    /// Which access key ids are real, for the throttle.
    keys: Arc<AccessKeys>,
}

async fn serve(listener: tokio::net::TcpListener, context: Arc<Context>) {
    let header = context.limits.header;
    let mut http =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    // Without a timer hyper has no clock, and its header timeout silently does nothing.
    http.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header);
    // Pings find a vanished HTTP/2 peer while a stream is open; an idle connection is
    // closed below, pings or not.
    http.http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(header)
        .keep_alive_timeout(header);
    let limits = Arc::new(ConnectionLimits::new(
        MAX_CONNECTIONS,
        MAX_CONNECTIONS_PER_CLIENT,
    ));
    let refusing = Arc::new(tokio::sync::Semaphore::new(MAX_REFUSING));
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors, typically: it lasts until a connection closes,
                // and retrying at once would only spin.
                tracing::warn!(%err, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // A trusted proxy carries many clients: its connections count only toward the total.
        let proxy = context
            .limits
            .proxies
            .iter()
            .any(|net| net.contains(remote.ip()));
        let Some(slot) = limits.admit(remote.ip(), proxy) else {
            tracing::debug!(%remote, "too many connections; answering 503 SlowDown");
            // A flood of refusals must not pile up either: past a few, close at once.
            if let Ok(permit) = refusing.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    let _permit = permit;
                    let _ = tokio::time::timeout(REFUSAL_LIMIT, slow_down(stream)).await;
                });
            }
            continue;
        };
        let activity = Arc::new(Activity::default());
        let handler = {
            let (context, activity) = (context.clone(), activity.clone());
            hyper::service::service_fn(move |req: Request<Incoming>| {
                let busy = activity.begin();
                let (context, activity) = (context.clone(), activity.clone());
                async move {
                    let response = handle(&context, remote, req).await;
                    // In progress until hyper has taken the answer's last byte.
                    Ok::<_, Infallible>(
                        response.map(|inner| s3s::Body::http_body(activity.track(inner, busy))),
                    )
                }
            })
        };
        let http = http.clone();
        let stalls = context.metrics.send_stalls.clone();
        let stall = context.limits.send_stall;
        let stream = StallGuard::new(stream, stall, {
            let stalls = stalls.clone();
            move || {
                tracing::info!(%remote, "the client read nothing of an answer for {stall:?}; closing");
                stalls.inc();
            }
        });
        tokio::spawn(async move {
            let _slot = slot;
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = http.serve_connection(io, handler);
            tokio::pin!(conn);
            // A connection with no request in progress for HEADER_TIMEOUT is closed: before
            // its first request (hyper's own header timeout starts only once the protocol
            // is known, and the auto builder waits for the bytes that tell HTTP/1 from
            // HTTP/2 with no clock), and between requests, kept-alive HTTP/1 and HTTP/2
            // alike (hyper closes neither on its own: HTTP/2 has no idle timeout at all).
            let result = tokio::select! {
                result = conn.as_mut() => result,
                // An answer hyper cannot send because the client takes none of it, while
                // the socket itself moves (HTTP/2: a stream whose window it never opens):
                // the connection goes, and with it the answer's body and the read
                // behind it. hyper cannot reset one stream from outside.
                () = activity.stalled_answer(stall) => {
                    tracing::info!(%remote, "the client took nothing of an answer for {stall:?}; closing");
                    stalls.inc();
                    return;
                }
                () = activity.idle_for(header) => {
                    if activity.begun() == 0 {
                        tracing::debug!(%remote, "no request head within {header:?}; closing");
                        return;
                    }
                    tracing::debug!(%remote, "idle for {header:?}; closing");
                    // HTTP/2 says goodbye (GOAWAY) first; either way the close is bounded.
                    conn.as_mut().graceful_shutdown();
                    match tokio::time::timeout(header, conn.as_mut()).await {
                        Ok(result) => result,
                        Err(_) => return,
                    }
                }
            };
            if let Err(err) = result {
                tracing::debug!(%remote, %err, "connection ended with an error");
            }
        });
    }
}

/// Answers a connection over the caps with S3's `503 SlowDown` and closes it: the answer,
/// then our end of the stream, then whatever the client had sent (so the close does not
/// reset the connection under an answer the client has not read yet).
async fn slow_down(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let id = crate::request::new_request_id();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
         <Message>Too many connections from your address; retry later.</Message>\
         <RequestId>{id}</RequestId></Error>"
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/xml\r\n\
         content-length: {}\r\nretry-after: 1\r\nx-amz-request-id: {id}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(response.as_bytes()).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 8192];
    let mut drained = 0;
    while drained < MAX_REFUSAL_DRAIN {
        match stream.read(&mut sink).await {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

/// Open connections, per client and in all.
struct ConnectionLimits {
    total: usize,
    per_client: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

impl ConnectionLimits {
    fn new(total: usize, per_client: usize) -> Self {
        Self {
            total,
            per_client,
            open: Mutex::new((0, HashMap::new())),
        }
    }

    /// A slot for a connection from `ip`, if it is under both caps (only the total for a
    /// `proxy`); the slot is given back when dropped.
    fn admit(self: &Arc<Self>, ip: IpAddr, proxy: bool) -> Option<ConnectionSlot> {
        let client = client_of(ip);
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (total, per_client) = &mut *open;
        let mine = per_client.entry(client).or_default();
        if *total >= self.total || (*mine >= self.per_client && !proxy) {
            if *mine == 0 {
                per_client.remove(&client);
            }
            return None;
        }
        *mine += 1;
        *total += 1;
        Some(ConnectionSlot {
            limits: self.clone(),
            client,
        })
    }
}

/// One admitted connection.
struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    client: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self
            .limits
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (total, per_client) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(mine) = per_client.get_mut(&self.client) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                per_client.remove(&self.client);
            }
        }
    }
}

/// `/health` and `/metrics` for operators; everything else is S3, prepared for s3s
/// (`request::prepare`) and answered under a request id of its own.
async fn handle(
    context: &Context,
    remote: SocketAddr,
    req: Request<Incoming>,
) -> Response<s3s::Body> {
    let metrics = &context.metrics;
    let path = req.uri().path();
    if req.method() == http::Method::GET && path == "/health" {
        return text(StatusCode::OK, "ok\n".into());
    }
    if req.method() == http::Method::GET && path == "/metrics" {
        return text(StatusCode::OK, metrics.render());
    }
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    // The access check, which every routed request passes through, names the operation.
    let operation = crate::access::OperationSlot::default();
    let id = crate::request::new_request_id();
    let client = client_address(remote.ip(), req.headers(), &context.limits.proxies);
    let idle = context.limits.body_idle;
    let mut req = req.map(|body| s3s::Body::http_body(IdleBody::new(body, idle)));
    req.extensions_mut().insert(operation.clone());
    req.extensions_mut().insert(ClientAddr(client));
    // A request signed with a key not known to be real costs its client a token of the
    // anonymous rate before its key is looked up (given back if the key is real), and one
    // whose signature fails costs one afterwards: a flood of made-up keys or bad signatures
    // from one address is slowed down before it reaches the coordinator.
    let signed_by = crate::access::signing_key_id(&req);
    let charged = signed_by
        .as_deref()
        .is_some_and(|key| !context.keys.is_known(key));
    let mut response = match crate::request::prepare(&mut req, &context.host) {
        Err(refused) => crate::errors::respond(refused),
        Ok(()) if charged && !context.throttle.allow(client) => {
            tracing::debug!(%client, "requests signed with unknown keys past the client's rate");
            crate::errors::respond(s3s::S3Error::with_message(
                s3s::S3ErrorCode::SlowDown,
                "Too many requests with unknown access keys or failed signatures from your \
                 address; slow down.",
            ))
        }
        Ok(()) => {
            let response = match context.service.call(req).await {
                Ok(response) => response,
                Err(err) => {
                    tracing::warn!(?err, request_id = %id, "S3 request failed outside the S3 layer");
                    text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n".into())
                }
            };
            if signed_by.is_some() {
                let refused = refused_signature(&response);
                if refused && !charged {
                    context.throttle.charge(client);
                } else if !refused && charged {
                    context.throttle.refund(client);
                }
            }
            response
        }
    };
    // A HEAD of one part answers 206 with its Content-Range, as the GET would; s3s sets
    // that status for GetObject only.
    if method == "HEAD"
        && response.status() == StatusCode::OK
        && response.headers().contains_key(http::header::CONTENT_RANGE)
    {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    let name = operation.name();
    crate::answers::as_s3_writes(&mut response, &name);
    crate::errors::stamp_request_id(&mut response, &id);
    let status = response.status();
    if status.is_server_error() {
        tracing::warn!(request_id = %id, operation = %name, %status, "S3 request failed");
    } else {
        tracing::debug!(request_id = %id, operation = %name, %status, "S3 request");
    }
    metrics
        .latency
        .with_label_values(&[&method])
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .with_label_values(&[&operation.name(), &method, response.status().as_str()])
        .inc();
    response
}

/// Whether `response` refuses a request's signature or its access key.
fn refused_signature(response: &Response<s3s::Body>) -> bool {
    if response.status() != StatusCode::FORBIDDEN {
        return false;
    }
    let Some(body) = response.body().bytes() else {
        return false;
    };
    [
        &b"<Code>SignatureDoesNotMatch</Code>"[..],
        b"<Code>InvalidAccessKeyId</Code>",
    ]
    .iter()
    .any(|code| body.windows(code.len()).any(|w| w == *code))
}

fn text(status: StatusCode, body: String) -> Response<s3s::Body> {
    let mut response = Response::new(s3s::Body::from(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn each_client_and_all_together_are_capped_and_slots_come_back() {
        let limits = Arc::new(ConnectionLimits::new(3, 2));
        let a1 = limits.admit(ip("192.0.2.1"), false).unwrap();
        let _a2 = limits.admit(ip("192.0.2.1"), false).unwrap();
        assert!(
            limits.admit(ip("192.0.2.1"), false).is_none(),
            "third from one client"
        );
        let _b1 = limits.admit(ip("192.0.2.2"), false).unwrap();
        assert!(
            limits.admit(ip("192.0.2.3"), false).is_none(),
            "fourth in all"
        );
        drop(a1);
        let c1 = limits.admit(ip("192.0.2.3"), false).unwrap();
        assert_eq!(limits.open.lock().unwrap().0, 3);
        drop((c1, _a2, _b1));
        let open = limits.open.lock().unwrap();
        assert_eq!(open.0, 0);
        assert!(
            open.1.is_empty(),
            "clients with no connection are forgotten"
        );
    }

    #[test]
    fn an_ipv6_slash_64_is_one_client_and_mapped_ipv4_is_its_ipv4() {
        assert_eq!(
            client_of(ip("2001:db8:1:2::1")),
            client_of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            client_of(ip("2001:db8:1:2::1")),
            client_of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(client_of(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_of(ip("192.0.2.7")), ip("192.0.2.7"));
        let limits = Arc::new(ConnectionLimits::new(10, 1));
        let _one = limits.admit(ip("2001:db8::1"), false).unwrap();
        assert!(limits.admit(ip("2001:db8::2"), false).is_none());
        // A trusted proxy is held to the total only.
        let _two = limits.admit(ip("2001:db8::2"), true).unwrap();
    }
}
