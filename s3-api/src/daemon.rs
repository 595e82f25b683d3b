//! Starting a gateway: its key, the coordinator client, the S3 service and the HTTP server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use cairn_coordinator::client::CoordinatorClient;
use cairn_proto::identity::{PublicKey, SecretKey};
use cairn_proto::transport::client_endpoint;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::task::JoinHandle;

use crate::access::{Access, Auth, Host};
use crate::config::GatewayConfig;
use crate::metrics::GatewayMetrics;
use crate::service::Gateway;
use crate::store::{DataPath, Repaired, run_worker};

/// File holding the gateway's identity key.
pub const KEY_FILE: &str = "gateway.key";

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
    let mut builder = S3ServiceBuilder::new(gateway);
    builder.set_auth(Auth::new(path.clone()));
    builder.set_access(Access::new(path.clone()));
    builder.set_host(Host::new(config.domain.clone()));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|err| format!("{}: {err}", config.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|err| format!("listener: {err}"))?;
    let host = Arc::new(Host::new(config.domain.clone()));
    let task = tokio::spawn(serve(listener, service, host, metrics));
    tracing::info!(%addr, key = %key.public(), "gateway serving S3");
    Ok(RunningGateway {
        addr,
        key: key.public(),
        task,
        workers,
    })
}

async fn serve(
    listener: tokio::net::TcpListener,
    service: S3Service,
    host: Arc<Host>,
    metrics: Arc<GatewayMetrics>,
) {
    let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(%err, "accepting a connection failed");
                continue;
            }
        };
        let (service, host, metrics) = (service.clone(), host.clone(), metrics.clone());
        let handler = hyper::service::service_fn(move |req: Request<Incoming>| {
            let (service, host, metrics) = (service.clone(), host.clone(), metrics.clone());
            async move { Ok::<_, Infallible>(handle(&service, &host, &metrics, req).await) }
        });
        let http = http.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(err) = http.serve_connection(io, handler).await {
                tracing::debug!(%err, "connection ended with an error");
            }
        });
    }
}

/// `/health` and `/metrics` for operators; everything else is S3, prepared for s3s
/// (`request::prepare`) and answered under a request id of its own.
async fn handle(
    service: &S3Service,
    host: &Host,
    metrics: &GatewayMetrics,
    req: Request<Incoming>,
) -> Response<s3s::Body> {
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
    let mut req = req.map(s3s::Body::from);
    req.extensions_mut().insert(operation.clone());
    let mut response = match crate::request::prepare(&mut req, host) {
        Err(refused) => crate::errors::respond(refused),
        Ok(()) => match service.call(req).await {
            Ok(response) => response,
            Err(err) => {
                tracing::warn!(?err, request_id = %id, "S3 request failed outside the S3 layer");
                text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n".into())
            }
        },
    };
    crate::errors::stamp_request_id(&mut response, &id);
    let status = response.status();
    let name = operation.name();
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

fn text(status: StatusCode, body: String) -> Response<s3s::Body> {
    let mut response = Response::new(s3s::Body::from(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
