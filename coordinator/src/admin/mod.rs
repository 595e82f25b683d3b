//! The admin HTTP API: JSON under `/v1/`, behind a bearer token; `/health`, `/metrics` and
//! the status page `/` are open. Writes go through Raft on the leader; a follower answers
//! 503 with the leader's admin address so clients can retry there.

mod convert;
mod metrics;
mod page;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_client::admin_views::*;
use cairn_proto::identity::PublicKey;
use cairn_proto::order::unix_now_ms;
use openraft::Raft;
use openraft::error::{ClientWriteError, RaftError};

use crate::catalog::model::{
    AccessKey, Bucket, BucketMode, ErasureProfile, GatewayRecord, NodeState,
};
use crate::catalog::{Catalog, CatalogError, Command, CommandResult, MoveReason, RequestId};
use crate::liveness::Liveness;
use crate::raft::types::{Member, TypeConfig};

/// Everything the handlers share.
#[derive(Clone)]
pub struct AdminState {
    inner: Arc<AdminContext>,
}

/// What the admin API works with, as the daemon assembles it.
pub struct AdminContext {
    /// This member's Raft handle.
    pub raft: Raft<TypeConfig>,
    /// The catalog (reads).
    pub catalog: Catalog,
    /// The bearer token every `/v1/` request must carry.
    pub token: String,
    /// This member's Raft id.
    pub id: u64,
    /// Node heartbeats seen by this member.
    pub liveness: Arc<Liveness>,
    /// Data shards for new buckets that do not say.
    pub default_k: u16,
    /// Parity shards for new buckets that do not say.
    pub default_m: u16,
    /// The coordinator key's public half, which invitations carry.
    pub key: cairn_proto::identity::PublicKey,
    /// The leader's repair queue and latest durability survey.
    pub repairs: std::sync::Arc<crate::repair::Repairs>,
    /// What the garbage collector did while this member led.
    pub gc: std::sync::Arc<crate::gc::GcStats>,
    /// What audits found while this member led.
    pub audits: std::sync::Arc<crate::audit::AuditStats>,
}

impl From<AdminContext> for AdminState {
    fn from(context: AdminContext) -> Self {
        Self {
            inner: Arc::new(context),
        }
    }
}

/// An error answer: status plus JSON body.
struct ApiError(StatusCode, ErrorView);

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError(
            status,
            ErrorView {
                error: message.into(),
                leader: None,
            },
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Serves the API on `listener` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, state: AdminState) {
    let api = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/members", get(members).post(add_member))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/{id}/state", post(set_node_state))
        .route("/v1/buckets", get(buckets).post(create_bucket))
        .route("/v1/keys", get(keys).post(create_key))
        .route("/v1/keys/{id}/revoke", post(revoke_key))
        .route("/v1/invites", post(create_invite))
        .route("/v1/gateways", get(gateways).post(register_gateway))
        .route("/v1/gateways/{key}", axum::routing::delete(remove_gateway))
        .route("/v1/backup", get(backup))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let app = Router::new()
        .route("/", get(page::status_page))
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics::metrics))
        .merge(api)
        .with_state(state);
    if let Err(err) = axum::serve(listener, app).await {
        tracing::warn!(%err, "admin API stopped");
    }
}

/// Refuses `/v1/` requests without `Authorization: Bearer <token>`.
async fn require_token(
    State(state): State<AdminState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let expected = state.inner.token.as_bytes();
    // Compare in constant time so the token cannot be guessed byte by byte from timing.
    let ok = given.is_some_and(|given| {
        let given = given.as_bytes();
        given.len() == expected.len()
            && given
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if !ok {
        return ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong admin token")
            .into_response();
    }
    next.run(request).await
}

/// Waits until this member is sure its reads are current (read-index through the leader).
async fn linearizable(state: &AdminState) -> ApiResult<()> {
    state
        .inner
        .raft
        .ensure_linearizable()
        .await
        .map(|_| ())
        .map_err(|err| {
            not_leader(
                state,
                err.to_string(),
                err.forward_to_leader().and_then(|f| f.leader_node.clone()),
            )
        })
}

fn not_leader(_state: &AdminState, message: String, leader: Option<Member>) -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorView {
            error: format!("not the leader: {message}"),
            leader: leader.map(|m| m.admin),
        },
    )
}

fn internal(err: impl ToString) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
}

/// A client's `Idempotency-Key`: resending a write with the same key (after a timeout or
/// a dropped connection) gets the first attempt's outcome instead of applying it again,
/// so a retried `bucket create` answers 201, not 409 for the bucket it created. Any
/// string of 1 to 128 visible ASCII characters; `cairn admin` sends a fresh one per
/// command and keeps it across its retries.
struct Idempotency(Option<RequestId>);

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 128;

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Idempotency {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(Self(None));
        };
        let key = value
            .to_str()
            .ok()
            .filter(|key| (1..=MAX_IDEMPOTENCY_KEY).contains(&key.len()))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
                )
            })?;
        // Hashed under the admin API's own context, so a key chosen here cannot name a
        // gateway's request.
        let hash = blake3::derive_key("cairn admin idempotency key v1", key.as_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&hash[..16]);
        Ok(Self(Some(RequestId(id))))
    }
}

/// Proposes a command and maps its outcome to HTTP; with an idempotency key, at most once
/// for that key (see [`Idempotency`]).
async fn write(
    state: &AdminState,
    once: &Idempotency,
    command: Command,
) -> ApiResult<CommandResult> {
    let command = match once.0 {
        Some(request) => Command::Once {
            request,
            command: Box::new(command),
            now_ms: unix_now_ms(),
        },
        None => command,
    };
    match state.inner.raft.client_write(command).await {
        Ok(response) => match response.data {
            CommandResult::Refused(err) => Err(refusal(err)),
            other => Ok(other),
        },
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => Err(not_leader(
            state,
            "writes go to the leader".into(),
            forward.leader_node,
        )),
        Err(err) => Err(internal(err)),
    }
}

fn refusal(err: CatalogError) -> ApiError {
    let status = match &err {
        CatalogError::NoSuchBucket(_)
        | CatalogError::NoSuchAccessKey(_)
        | CatalogError::NoSuchNode(_)
        | CatalogError::NoSuchGateway(_)
        | CatalogError::NoSuchUpload(_)
        | CatalogError::NoSuchKey(_) => StatusCode::NOT_FOUND,
        CatalogError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
        CatalogError::BucketExists(_)
        | CatalogError::AccessKeyExists(_)
        | CatalogError::BucketNotEmpty(_)
        | CatalogError::UploadExists(_)
        | CatalogError::Stale(_) => StatusCode::CONFLICT,
        CatalogError::InvalidBucketName(_)
        | CatalogError::InvalidKey(_)
        | CatalogError::InvalidInvite
        | CatalogError::WrongOrg { .. }
        | CatalogError::UnknownNode(_)
        | CatalogError::InvalidPart(_)
        | CatalogError::InvalidPartOrder
        | CatalogError::EntityTooSmall { .. }
        | CatalogError::Malformed(_)
        | CatalogError::Rejected(_) => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, err.to_string())
}

fn member_views(state: &AdminState) -> Vec<MemberView> {
    let metrics = state.inner.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, member)| MemberView {
            id: *id,
            addr: member.addr.clone(),
            admin: member.admin.clone(),
            key: member.key.clone(),
            voter: voters.contains(id),
        })
        .collect()
}

async fn status(State(state): State<AdminState>) -> ApiResult<Json<StatusView>> {
    status_view(&state).map(Json)
}

/// The status as this member knows it: `GET /v1/status` and the status page both show it.
fn status_view(state: &AdminState) -> ApiResult<StatusView> {
    let metrics = state.inner.raft.metrics().borrow().clone();
    let catalog = &state.inner.catalog;
    let stats = catalog.stats().map_err(internal)?;
    let mut nodes_by_state = BTreeMap::new();
    for node in catalog.nodes().map_err(internal)? {
        *nodes_by_state
            .entry(node.state.as_str().to_string())
            .or_insert(0) += 1;
    }
    Ok(StatusView {
        member: state.inner.id,
        leader: metrics.current_leader,
        coordinator_key: state.inner.key.to_string(),
        term: metrics.current_term,
        last_applied: metrics.last_applied.map(|id| id.index),
        members: member_views(state),
        nodes_by_state,
        buckets: catalog.buckets().map_err(internal)?.len() as u64,
        objects: stats.objects,
        logical_bytes: stats.logical_bytes,
        durability: durability(state, stats.logical_bytes).map_err(internal)?,
    })
}

/// The durability view from the latest survey (the leader's) and the committed counters.
fn durability(
    state: &AdminState,
    logical_bytes: u64,
) -> Result<Option<DurabilityView>, crate::catalog::CatalogFault> {
    let view = state.inner.repairs.view();
    let (Some(survey), Some(surveyed_ms)) = (view.survey, view.surveyed_ms) else {
        return Ok(None);
    };
    let loss_model = loss_model(state, &survey)?;
    let mut moved = BTreeMap::new();
    for reason in MoveReason::ALL {
        let (shards, bytes) = state.inner.catalog.moved(reason)?;
        moved.insert(reason.as_str().to_string(), MovedView { shards, bytes });
    }
    Ok(Some(DurabilityView {
        segments_by_margin: survey.segments_by_margin,
        segments: survey.segments,
        unreadable: survey.unreadable,
        below_spread: survey.below_spread,
        spread_checked: survey.spread_checked,
        spread_passes: survey.spread_passes,
        repair_queue: view.queue,
        repairs_in_progress: view.in_progress,
        moved,
        stored_bytes: survey.stored_bytes,
        stored_per_logical: (logical_bytes > 0 && survey.stored_bytes > 0)
            .then(|| survey.stored_bytes as f64 / logical_bytes as f64),
        surveyed_ms,
        missing_shards: state.inner.gc.missing.load(Ordering::Relaxed),
        garbage_queue: state.inner.catalog.garbage_count()?,
        orphans_pending: state.inner.gc.orphans_pending.load(Ordering::Relaxed),
        collected_shards: state.inner.gc.deleted.load(Ordering::Relaxed),
        loss_model: loss_model.into(),
    }))
}

/// The loss model from the nodes' history and the survey's margins.
fn loss_model(
    state: &AdminState,
    survey: &crate::durability::Survey,
) -> Result<crate::durability::LossModel, crate::catalog::CatalogFault> {
    const YEAR_MS: f64 = 365.25 * 24.0 * 3600.0 * 1000.0;
    let nodes = state.inner.catalog.nodes()?;
    let now = unix_now_ms();
    let mut failures = 0;
    let mut node_years = 0.0;
    let mut holding = 0u64;
    for node in &nodes {
        let ended = matches!(
            node.state,
            NodeState::Lost | NodeState::Gone | NodeState::Disqualified
        );
        if matches!(node.state, NodeState::Lost | NodeState::Disqualified) {
            failures += 1;
        }
        if node.state.holds_data() {
            holding += 1;
        }
        let end = if ended { node.state_since_ms } else { now };
        node_years += end.saturating_sub(node.joined_ms) as f64 / YEAR_MS;
    }
    let settings = state.inner.repairs.settings();
    // Rebuilding one node's share reads k shards and writes one per shard it held.
    let per_node = survey.stored_bytes / holding.max(1);
    let moving = if settings.bandwidth > 0 {
        std::time::Duration::from_secs_f64(
            (per_node as f64 * (f64::from(state.inner.default_k) + 1.0))
                / settings.bandwidth as f64,
        )
    } else {
        std::time::Duration::ZERO
    };
    let window = settings.lost_after + settings.interval + moving;
    Ok(crate::durability::loss_model(
        &survey.segments_by_shape,
        failures,
        node_years,
        window,
    ))
}

async fn members(State(state): State<AdminState>) -> ApiResult<Json<Vec<MemberView>>> {
    Ok(Json(member_views(&state)))
}

/// Adds a member as a learner, waits until it has caught up, then makes it a voter.
async fn add_member(
    State(state): State<AdminState>,
    Json(add): Json<AddMember>,
) -> ApiResult<Json<Vec<MemberView>>> {
    if add.id == 0 || add.addr.parse::<std::net::SocketAddr>().is_err() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "a member needs an id ≥ 1 and a QUIC socket address",
        ));
    }
    let key: PublicKey = add.key.trim().parse().map_err(|err| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("member key (printed by the member at start as `member key:`): {err}"),
        )
    })?;
    let raft = &state.inner.raft;
    let member = Member {
        addr: add.addr,
        admin: add.admin,
        key: key.to_string(),
    };
    if let Err(err) = raft.add_learner(add.id, member, true).await {
        let leader = err.forward_to_leader().and_then(|f| f.leader_node.clone());
        return Err(match leader {
            Some(_) => not_leader(&state, err.to_string(), leader),
            None => internal(err),
        });
    }
    let mut voters: BTreeSet<u64> = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    voters.insert(add.id);
    raft.change_membership(voters, false)
        .await
        .map_err(internal)?;
    Ok(Json(member_views(&state)))
}

async fn nodes(State(state): State<AdminState>) -> ApiResult<Json<Vec<NodeView>>> {
    linearizable(&state).await?;
    let nodes = state.inner.catalog.nodes().map_err(internal)?;
    let placed = placed_shards(&state);
    Ok(Json(
        nodes
            .iter()
            .map(|n| convert::node_view(n, state.inner.liveness.last(&n.id), placed(&n.id)))
            .collect(),
    ))
}

/// An operator's lifecycle decision: `active` (vetted by hand until audits do it),
/// `draining`, `gone`, `disqualified`, or `vetting` again. Suspect and lost are the failure
/// detector's to set.
async fn set_node_state(
    State(state): State<AdminState>,
    once: Idempotency,
    Path(id): Path<String>,
    Json(req): Json<SetNodeState>,
) -> ApiResult<Json<NodeView>> {
    let node: PublicKey = id
        .trim()
        .parse()
        .map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, format!("node id: {err}")))?;
    let target = match req.state.as_str() {
        "vetting" => NodeState::Vetting,
        "active" => NodeState::Active,
        "draining" => NodeState::Draining,
        "gone" => NodeState::Gone,
        "disqualified" => NodeState::Disqualified,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "state {other:?}: an operator sets vetting, active, draining, gone or disqualified"
                ),
            ));
        }
    };
    if target == NodeState::Gone {
        // Gone means nothing depends on the node: counted now, not from a survey that may
        // predate the latest placements.
        linearizable(&state).await?;
        let catalog = state.inner.catalog.clone();
        let placed =
            tokio::task::spawn_blocking(move || crate::durability::placed_on(&catalog, &node))
                .await
                .map_err(internal)?
                .map_err(internal)?;
        if placed > 0 {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "{placed} shards are still placed on the node: drain it first (or mark it \
                     disqualified to have them rebuilt elsewhere)"
                ),
            ));
        }
    }
    write(
        &state,
        &once,
        Command::SetNodeState {
            node,
            state: target,
            now_ms: unix_now_ms(),
        },
    )
    .await?;
    let record = state.inner.catalog.node(&node).map_err(internal)?;
    let placed = placed_shards(&state);
    record
        .map(|n| {
            Json(convert::node_view(
                &n,
                state.inner.liveness.last(&n.id),
                placed(&n.id),
            ))
        })
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such node"))
}

/// Shards per node from the latest survey (none on followers or before the first one; a
/// node the survey found nothing on has zero).
fn placed_shards(state: &AdminState) -> impl Fn(&PublicKey) -> Option<u64> {
    let survey = state.inner.repairs.view().survey;
    move |node| {
        survey
            .as_ref()
            .map(|s| s.shards_by_node.get(node).copied().unwrap_or(0))
    }
}

async fn buckets(State(state): State<AdminState>) -> ApiResult<Json<Vec<BucketView>>> {
    linearizable(&state).await?;
    let buckets = state.inner.catalog.buckets().map_err(internal)?;
    Ok(Json(buckets.iter().map(BucketView::from).collect()))
}

async fn create_bucket(
    State(state): State<AdminState>,
    once: Idempotency,
    Json(req): Json<CreateBucket>,
) -> ApiResult<(StatusCode, Json<BucketView>)> {
    let k = req.k.unwrap_or(state.inner.default_k);
    let m = req.m.unwrap_or(state.inner.default_m);
    if let Err(err) = cairn_erasure::Codec::new(k as usize, m as usize) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, err.to_string()));
    }
    let segment_size = req
        .segment_size
        .unwrap_or(ErasureProfile::PRODUCTION.segment_size);
    if segment_size == 0 || segment_size > 1 << 30 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "segment_size must be 1 byte to 1 GiB",
        ));
    }
    let mode = if req.nix_cache {
        for key in &req.trusted_keys {
            if !key.contains(':') {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("trusted key {key:?} is not NAME:BASE64"),
                ));
            }
        }
        BucketMode::NixCache {
            trusted_keys: req.trusted_keys.clone(),
        }
    } else if !req.trusted_keys.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "trusted keys only apply to nix-cache buckets",
        ));
    } else {
        BucketMode::Plain
    };
    let bucket = Bucket {
        name: req.name.clone(),
        created_ms: unix_now_ms(),
        public_read: req.public_read,
        mode,
        erasure: ErasureProfile { k, m, segment_size },
        failure_tolerance: req.failure_tolerance.unwrap_or(2),
    };
    write(
        &state,
        &once,
        Command::CreateBucket {
            bucket: bucket.clone(),
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(BucketView::from(&bucket))))
}

async fn gateways(State(state): State<AdminState>) -> ApiResult<Json<Vec<GatewayView>>> {
    linearizable(&state).await?;
    let gateways = state.inner.catalog.gateways().map_err(internal)?;
    Ok(Json(gateways.iter().map(GatewayView::from).collect()))
}

async fn register_gateway(
    State(state): State<AdminState>,
    once: Idempotency,
    Json(req): Json<RegisterGateway>,
) -> ApiResult<(StatusCode, Json<GatewayView>)> {
    let key: PublicKey = req
        .key
        .trim()
        .parse()
        .map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, format!("gateway key: {err}")))?;
    let gateway = GatewayRecord {
        key,
        name: req.name,
        created_ms: unix_now_ms(),
    };
    write(
        &state,
        &once,
        Command::RegisterGateway {
            gateway: gateway.clone(),
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(GatewayView::from(&gateway))))
}

async fn remove_gateway(
    State(state): State<AdminState>,
    once: Idempotency,
    Path(key): Path<String>,
) -> ApiResult<Json<GatewayView>> {
    let key: PublicKey = key
        .trim()
        .parse()
        .map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, format!("gateway key: {err}")))?;
    linearizable(&state).await?;
    let known = state.inner.catalog.gateway(&key).map_err(internal)?;
    write(&state, &once, Command::RemoveGateway { key }).await?;
    known
        .map(|g| Json(GatewayView::from(&g)))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such gateway"))
}

async fn keys(State(state): State<AdminState>) -> ApiResult<Json<Vec<KeyView>>> {
    linearizable(&state).await?;
    let keys = state.inner.catalog.access_keys().map_err(internal)?;
    Ok(Json(keys.iter().map(KeyView::from).collect()))
}

/// Random text from an alphabet, for key ids and secrets.
fn random_text(len: usize, alphabet: &[u8]) -> ApiResult<String> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).map_err(internal)?;
    Ok(bytes
        .iter()
        .map(|b| alphabet[*b as usize % alphabet.len()] as char)
        .collect())
}

async fn create_key(
    State(state): State<AdminState>,
    Json(req): Json<CreateKey>,
) -> ApiResult<(StatusCode, Json<NewKey>)> {
    // 32 symbols divide 256 evenly, so the modulo keeps the ids uniform; the secret's 64
    // symbols likewise.
    let id = format!(
        "CAIRN{}",
        random_text(15, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")?
    );
    let secret = random_text(
        40,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    )?;
    let key = AccessKey {
        id: id.clone(),
        secret: secret.clone(),
        name: req.name.clone(),
        created_ms: unix_now_ms(),
        revoked: false,
    };
    // Not idempotent: a resend could not answer the secret the first attempt made (only
    // its holder may know it), so a retried creation makes another key; an unused one is
    // revoked like any other.
    write(&state, &Idempotency(None), Command::CreateAccessKey { key }).await?;
    Ok((
        StatusCode::CREATED,
        Json(NewKey {
            id,
            secret,
            name: req.name,
        }),
    ))
}

async fn revoke_key(
    State(state): State<AdminState>,
    once: Idempotency,
    Path(id): Path<String>,
) -> ApiResult<Json<KeyView>> {
    write(&state, &once, Command::RevokeAccessKey { id: id.clone() }).await?;
    let key = state.inner.catalog.access_key(&id).map_err(internal)?;
    key.map(|k| Json(KeyView::from(&k)))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such key"))
}

/// Makes a one-time invitation: its secret goes into the token only, its hash into the
/// catalog.
async fn create_invite(
    State(state): State<AdminState>,
    Json(req): Json<CreateInvite>,
) -> ApiResult<(StatusCode, Json<InviteView>)> {
    let hours = req.valid_hours.unwrap_or(24).clamp(1, 24 * 365);
    let org = req.org.as_deref().map(str::trim).unwrap_or_default();
    if let Err(message) = crate::catalog::model::validate_domain("organisation", org) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("an invitation must name the node's organisation (--org): {message}"),
        ));
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(internal)?;
    let expires_ms = unix_now_ms() + hours * 3_600_000;
    let secret_hash = cairn_proto::invite::JoinToken::secret_hash(&secret);
    // Not idempotent, like access keys: an unused invitation expires.
    write(
        &state,
        &Idempotency(None),
        Command::CreateInvite {
            secret_hash,
            expires_ms,
            org: Some(org.to_string()),
        },
    )
    .await?;
    let coordinators = member_views(&state).into_iter().map(|m| m.addr).collect();
    let token = cairn_proto::invite::JoinToken {
        coordinators,
        key: state.inner.key,
        secret,
    };
    Ok((
        StatusCode::CREATED,
        Json(InviteView {
            token: token.encode(),
            expires_ms,
        }),
    ))
}

/// The whole catalog at one point in time, in the backup format (`cairn admin backup`).
async fn backup(State(state): State<AdminState>) -> ApiResult<Response> {
    linearizable(&state).await?;
    let catalog = state.inner.catalog.clone();
    let key = state.inner.key;
    let bytes = tokio::task::spawn_blocking(move || crate::catalog::backup(&catalog, &key))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}
