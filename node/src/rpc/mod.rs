//! The JSON-RPC 2.0 server: `POST /rpc/v1` with named params, `GET /health`
//! and `GET /metrics` (Prometheus text).
//!
//! The server knows nothing of the node's insides: it parses and bounds
//! requests (body size, concurrency, deadlines, batch size), decodes params
//! into typed structs, and calls an [`RpcBackend`]. Errors are JSON-RPC
//! error objects whose `data` carries a stable `code` string and the
//! reason (mempool refusals come back as is).
//!
//! Every request, on every route, goes through the same gate, in order:
//!
//! 1. its `Host` must be allowed ([`access`]: localhost names, the listen
//!    address, `rpc.allowed_hosts`), else HTTP 403 `host_not_allowed`;
//! 2. a request with an `Origin` (a web page) must come from an origin of
//!    `rpc.cors_origins`, else HTTP 403 `origin_not_allowed`; the CORS
//!    preflight of an allowed origin is answered there;
//! 3. it takes one of `rpc.max_concurrent` permits for its whole life,
//!    else HTTP 503 `busy`: `/health` and `/metrics` too;
//! 4. its deadlines count from there: reading the body, `/health` and
//!    `/metrics` and every JSON-RPC call have `rpc.request_timeout`, a
//!    `broadcast_tx` with `wait: "commit"` has the longer of it and
//!    `rpc.commit_timeout`.
//!
//! A `POST /rpc/v1` must say `Content-Type: application/json` (a
//! `charset=utf-8` parameter is allowed), else HTTP 415
//! `unsupported_media_type`: together with the Origin check this keeps web
//! pages from posting to a node on 127.0.0.1 as `text/plain` or a form.
//!
//! The items of a batch run concurrently within the batch's one permit and
//! one set of deadlines, all counted from the start of the request: a
//! batch takes as long as its slowest item, never longer than the longer of
//! the request and commit timeouts, and an item still running at its
//! deadline answers a `timeout` error. Answers keep the order of the batch.
//! As items run at once, txs of one batch have no order among themselves:
//! a sender's txs with consecutive nonces may reach the mempool out of
//! order (it queues nonce gaps until they fill); send them in separate
//! requests, one after the other, when the order matters.

pub mod access;
pub mod types;

pub use access::RpcAccess;
use access::{CorsOrigins, HostAllowList};
use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;
pub use types::*;

/// Most requests in one JSON-RPC batch.
pub const MAX_BATCH: usize = 100;

/// What the RPC needs from the node.
#[async_trait]
pub trait RpcBackend: Send + Sync + 'static {
    /// Admit a tx; with `wait = Commit`, wait until it is committed.
    async fn broadcast_tx(&self, tx: Vec<u8>, wait: WaitFor) -> Result<BroadcastResult, RpcError>;
    /// Where a tx is.
    async fn tx_query(&self, hash: kite_types::Hash) -> Result<TxStatus, RpcError>;
    /// A block by height or hash.
    async fn block(&self, query: BlockQuery) -> Result<BlockView, RpcError>;
    /// Node status.
    async fn status(&self) -> Result<StatusView, RpcError>;
    /// Connected peers.
    async fn peers(&self) -> Result<Vec<PeerView>, RpcError>;
    /// The validator set.
    async fn validators(&self) -> Result<ValidatorsView, RpcError>;
    /// An account's balance and nonce (committed, and next nonce to use).
    async fn account(&self, id: kite_types::PublicKey) -> Result<AccountView, RpcError>;
    /// A value of the key-value app.
    async fn kv_get(&self, owner: kite_types::PublicKey, key: Vec<u8>) -> Result<KvView, RpcError>;
    /// Health: synced and committing.
    async fn health(&self) -> HealthView;
    /// Prometheus text of the node's metrics.
    fn metrics_text(&self) -> String;
}

/// Limits of the server.
#[derive(Debug, Clone)]
pub struct RpcLimits {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Most requests served at once, on every route; more get HTTP 503.
    pub max_concurrent: usize,
    /// Deadline of a request, counted from its start: reading its body,
    /// `/health`, `/metrics` and each JSON-RPC call, in a batch too (a
    /// commit wait has the longer of this and `commit_timeout`).
    pub request_timeout: Duration,
    /// Deadline of `broadcast_tx` with `wait: "commit"`, counted from the
    /// start of the request.
    pub commit_timeout: Duration,
    /// Who may call the server beyond the built-in rules
    /// (`rpc.allowed_hosts`, `rpc.cors_origins`). The default adds no host
    /// and allows no origin.
    pub access: RpcAccess,
}

impl Default for RpcLimits {
    fn default() -> Self {
        RpcLimits {
            max_body_bytes: 1 << 20,
            max_concurrent: 256,
            request_timeout: Duration::from_secs(10),
            commit_timeout: Duration::from_secs(30),
            access: RpcAccess::default(),
        }
    }
}

struct Shared {
    backend: Arc<dyn RpcBackend>,
    limits: RpcLimits,
    permits: Semaphore,
    hosts: HostAllowList,
    origins: CorsOrigins,
}

/// When the gate let a request in: its deadlines count from there.
#[derive(Debug, Clone, Copy)]
struct Started(Instant);

/// The axum router of the RPC (for tests and embedding). It does not know
/// the address it is served on, so beyond `limits.access` its Host
/// check lets through only the localhost names; [`serve`] adds the listen
/// address.
pub fn router(backend: Arc<dyn RpcBackend>, limits: RpcLimits) -> Router {
    build(backend, limits, None)
}

fn build(backend: Arc<dyn RpcBackend>, limits: RpcLimits, listen: Option<SocketAddr>) -> Router {
    let access = limits.access.clone();
    let shared = Arc::new(Shared {
        backend,
        permits: Semaphore::new(limits.max_concurrent.max(1)),
        limits: limits.clone(),
        hosts: HostAllowList::new(&access.allowed_hosts, listen),
        origins: CorsOrigins::new(&access.cors_origins),
    });
    Router::new()
        .route("/rpc/v1", post(rpc_handler))
        .route("/health", get(health_handler))
        .route("/metrics", get(metrics_handler))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

/// Binds `addr` and serves until `shutdown` resolves. Returns the bound
/// address (port 0 picks a free port) once listening. The Host check
/// accepts the bound address (see [`access`]).
pub async fn serve(
    addr: SocketAddr,
    backend: Arc<dyn RpcBackend>,
    limits: RpcLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = build(backend, limits, Some(bound));
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "rpc server stopped");
        }
    });
    Ok((bound, task))
}

/// An error answer with an HTTP status.
fn refuse(status: StatusCode, e: RpcError) -> Response {
    (status, axum::Json(error_response(Value::Null, e))).into_response()
}

/// The gate every request passes (see the module doc): Host, Origin and
/// preflight, the concurrency permit, the start of its deadlines.
async fn gate(State(s): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("(not text)").to_owned());
    let host_ok = s.hosts.allows(host.as_deref().unwrap_or(""));
    if !host_ok {
        let what = match &host {
            Some(h) => format!("Host {h:?} is not allowed"),
            None => "the request has no Host header".to_owned(),
        };
        return refuse(
            StatusCode::FORBIDDEN,
            RpcError::new(
                FORBIDDEN,
                "host_not_allowed",
                format!(
                    "{what}: this node answers to {}. To reach it under another name, add that \
                     name to rpc.allowed_hosts (flag --rpc.allowed_hosts, env \
                     KITE_RPC_ALLOWED_HOSTS); [\"*\"] turns the check off, which lets web pages \
                     read the RPC through DNS rebinding",
                    s.hosts.describe()
                ),
            ),
        );
    }
    let origin = match req.headers().get(header::ORIGIN) {
        None => None,
        Some(o) => {
            let text = o.to_str().unwrap_or("(not text)");
            if !s.origins.allows(text) {
                return refuse(
                    StatusCode::FORBIDDEN,
                    RpcError::new(
                        FORBIDDEN,
                        "origin_not_allowed",
                        format!(
                            "requests from web pages are refused: Origin {text:?} is not in \
                             rpc.cors_origins (flag --rpc.cors_origins, env \
                             KITE_RPC_CORS_ORIGINS); add it there to let that page call this node"
                        ),
                    ),
                );
            }
            Some(o.clone())
        }
    };
    if let Some(o) = &origin
        && req.method() == Method::OPTIONS
    {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        allow_origin(h, o, s.origins.any());
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        return resp;
    }
    let Ok(_permit) = s.permits.try_acquire() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            RpcError::busy(format!(
                "too many concurrent requests (rpc.max_concurrent = {}): retry later",
                s.limits.max_concurrent
            )),
        );
    };
    req.extensions_mut().insert(Started(Instant::now()));
    let mut resp = next.run(req).await;
    if let Some(o) = &origin {
        allow_origin(resp.headers_mut(), o, s.origins.any());
    }
    resp
}

/// Sets `Access-Control-Allow-Origin` for an allowed `origin`.
fn allow_origin(h: &mut HeaderMap, origin: &HeaderValue, any: bool) {
    if any {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    } else {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.append(header::VARY, HeaderValue::from_static("origin"));
    }
}

async fn health_handler(
    State(s): State<Arc<Shared>>,
    Extension(started): Extension<Started>,
) -> Response {
    let limit = s.limits.request_timeout;
    let Ok(h) = tokio::time::timeout_at(started.0 + limit, s.backend.health()).await else {
        let h = HealthView {
            healthy: false,
            reason: format!(
                "the health check did not answer within {limit:?} (rpc.request_timeout)"
            ),
            height: 0,
        };
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(h)).into_response();
    };
    let code = if h.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(h)).into_response()
}

async fn metrics_handler(
    State(s): State<Arc<Shared>>,
    Extension(started): Extension<Started>,
) -> Response {
    let limit = s.limits.request_timeout;
    let backend = s.backend.clone();
    let text = tokio::task::spawn_blocking(move || backend.metrics_text());
    match tokio::time::timeout_at(started.0 + limit, text).await {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Ok(Err(e)) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            RpcError::internal(format!("rendering the metrics failed: {e}")),
        ),
        Err(_) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            RpcError::new(
                TIMEOUT,
                "timeout",
                format!("the metrics did not render within {limit:?} (rpc.request_timeout)"),
            ),
        ),
    }
}

/// Whether `headers` declare a JSON body: `application/json`, with at most
/// a `charset=utf-8` parameter. `Err` holds what they declare instead.
fn json_content_type(headers: &HeaderMap) -> Result<(), String> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err("no Content-Type".to_owned());
    };
    let Ok(text) = value.to_str() else {
        return Err("a Content-Type that is not text".to_owned());
    };
    let mut parts = text.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    let params_ok = parts.all(|p| {
        let p = p.trim();
        p.is_empty()
            || p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("charset")
                    && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            })
    });
    if essence.eq_ignore_ascii_case("application/json") && params_ok {
        Ok(())
    } else {
        Err(format!("Content-Type {text:?}"))
    }
}

async fn rpc_handler(
    State(s): State<Arc<Shared>>,
    Extension(started): Extension<Started>,
    req: Request,
) -> Response {
    if let Err(got) = json_content_type(req.headers()) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RpcError::new(
                INVALID_REQUEST,
                "unsupported_media_type",
                format!(
                    "a JSON-RPC request must be sent with Content-Type: application/json \
                     (optionally with charset=utf-8), this one has {got}; e.g. curl -H \
                     'content-type: application/json'"
                ),
            ),
        );
    }
    let limit = s.limits.request_timeout;
    let body = match tokio::time::timeout_at(started.0 + limit, Bytes::from_request(req, &())).await
    {
        Ok(Ok(body)) => body,
        Ok(Err(rejection)) => return rejection.into_response(),
        Err(_) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                RpcError::new(
                    TIMEOUT,
                    "timeout",
                    format!(
                        "the request body did not arrive within {limit:?} (rpc.request_timeout)"
                    ),
                ),
            );
        }
    };
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return axum::Json(error_response(
                Value::Null,
                RpcError::new(PARSE_ERROR, "parse_error", format!("not JSON: {e}")),
            ))
            .into_response();
        }
    };
    match parsed {
        Value::Array(items) => {
            if items.is_empty() || items.len() > MAX_BATCH {
                let e = RpcError::new(
                    INVALID_REQUEST,
                    "invalid_request",
                    format!(
                        "a batch holds 1 to {MAX_BATCH} requests, got {}",
                        items.len()
                    ),
                );
                return axum::Json(error_response(Value::Null, e)).into_response();
            }
            // All at once, within this request's permit and deadlines.
            let answers = futures::future::join_all(
                items.into_iter().map(|item| one_request(&s, started, item)),
            )
            .await;
            let out: Vec<Value> = answers.into_iter().flatten().collect();
            axum::Json(Value::Array(out)).into_response()
        }
        single => match one_request(&s, started, single).await {
            Some(r) => axum::Json(r).into_response(),
            None => StatusCode::NO_CONTENT.into_response(),
        },
    }
}

/// Handles one request object of a request that started at `started`;
/// `None` for a notification (no id).
async fn one_request(s: &Shared, started: Started, req: Value) -> Option<Value> {
    let Value::Object(mut obj) = req else {
        return Some(error_response(
            Value::Null,
            RpcError::new(
                INVALID_REQUEST,
                "invalid_request",
                "a request is a JSON object",
            ),
        ));
    };
    let id = obj.remove("id");
    let is_notification = id.is_none();
    let id = id.unwrap_or(Value::Null);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Some(error_response(
            id,
            RpcError::new(
                INVALID_REQUEST,
                "invalid_request",
                "jsonrpc must be \"2.0\"",
            ),
        ));
    }
    let Some(method) = obj.get("method").and_then(Value::as_str).map(str::to_owned) else {
        return Some(error_response(
            id,
            RpcError::new(
                INVALID_REQUEST,
                "invalid_request",
                "method must be a string",
            ),
        ));
    };
    let params = obj
        .remove("params")
        .unwrap_or(Value::Object(Default::default()));
    let commit_wait =
        method == "broadcast_tx" && params.get("wait").and_then(Value::as_str) == Some("commit");
    let (limit, key) = if commit_wait {
        (
            s.limits.commit_timeout.max(s.limits.request_timeout),
            "rpc.commit_timeout",
        )
    } else {
        (s.limits.request_timeout, "rpc.request_timeout")
    };
    let result =
        match tokio::time::timeout_at(started.0 + limit, dispatch(s, &method, params)).await {
            Ok(r) => r,
            Err(_) => Err(RpcError::new(
                TIMEOUT,
                "timeout",
                format!(
                    "{method} did not finish within {limit:?} of the start of the request ({key}, \
                 one deadline for every item of a batch)"
                ),
            )),
        };
    if is_notification {
        return None;
    }
    Some(match result {
        Ok(v) => json!({"jsonrpc": "2.0", "id": id, "result": v}),
        Err(e) => error_response(id, e),
    })
}

fn error_response(id: Value, e: RpcError) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": e.code, "message": e.message, "data": {"code": e.kind, "reason": e.message}},
    })
}

fn params<T: DeserializeOwned>(v: Value) -> Result<T, RpcError> {
    let v = if v.is_null() {
        Value::Object(Default::default())
    } else {
        v
    };
    if !v.is_object() {
        return Err(RpcError::invalid_params(
            "params must be a JSON object of named fields",
        ));
    }
    serde_json::from_value(v).map_err(|e| RpcError::invalid_params(e.to_string()))
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Value, RpcError> {
    serde_json::to_value(v).map_err(|e| RpcError::internal(e.to_string()))
}

async fn dispatch(s: &Shared, method: &str, p: Value) -> Result<Value, RpcError> {
    let b = &s.backend;
    match method {
        "broadcast_tx" => {
            let p: BroadcastParams = params(p)?;
            let tx = hex::decode(p.tx.trim().trim_start_matches("0x"))
                .map_err(|e| RpcError::invalid_params(format!("tx is not hex: {e}")))?;
            to_value(b.broadcast_tx(tx, p.wait).await?)
        }
        "tx_query" => {
            let p: HashParams = params(p)?;
            to_value(b.tx_query(p.hash).await?)
        }
        "block" => {
            let p: BlockParams = params(p)?;
            let q = match (p.height, p.hash) {
                (Some(h), None) => BlockQuery::Height(h),
                (None, Some(h)) => BlockQuery::Hash(h),
                _ => {
                    return Err(RpcError::invalid_params(
                        "give exactly one of height or hash",
                    ));
                }
            };
            to_value(b.block(q).await?)
        }
        "status" => {
            let _: Empty = params(p)?;
            to_value(b.status().await?)
        }
        "peers" => {
            let _: Empty = params(p)?;
            to_value(b.peers().await?)
        }
        "validators" => {
            let _: Empty = params(p)?;
            to_value(b.validators().await?)
        }
        "account" => {
            let p: AccountParams = params(p)?;
            to_value(b.account(p.id).await?)
        }
        "kv_get" => {
            let p: KvParams = params(p)?;
            to_value(b.kv_get(p.owner, p.key.into_bytes()).await?)
        }
        "health" => {
            let _: Empty = params(p)?;
            to_value(b.health().await)
        }
        other => Err(RpcError::new(
            METHOD_NOT_FOUND,
            "method_not_found",
            format!(
                "no method {other:?}; methods: broadcast_tx, tx_query, block, status, peers, validators, account, kv_get, health"
            ),
        )),
    }
}
