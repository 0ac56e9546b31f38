//! The JSON-RPC 2.0 server: `POST /rpc/v1` with named params, `GET /health`
//! and `GET /metrics` (Prometheus text).
//!
//! The server knows nothing of the node's insides: it parses and bounds
//! requests (body size, concurrency, per-request deadline, batch size),
//! decodes params into typed structs, and calls an [`RpcBackend`]. Errors
//! are JSON-RPC error objects whose `data` carries a stable `code` string
//! and the reason (mempool refusals come back as is).

pub mod types;

use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
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
    /// Most requests served at once; more get HTTP 503.
    pub max_concurrent: usize,
    /// Deadline of one request (a commit wait has its own, longer one).
    pub request_timeout: Duration,
    /// Deadline of `broadcast_tx` with `wait: "commit"`.
    pub commit_timeout: Duration,
}

impl Default for RpcLimits {
    fn default() -> Self {
        RpcLimits {
            max_body_bytes: 1 << 20,
            max_concurrent: 256,
            request_timeout: Duration::from_secs(10),
            commit_timeout: Duration::from_secs(30),
        }
    }
}

struct Shared {
    backend: Arc<dyn RpcBackend>,
    limits: RpcLimits,
    permits: Semaphore,
}

/// The axum router of the RPC (for tests and embedding).
pub fn router(backend: Arc<dyn RpcBackend>, limits: RpcLimits) -> Router {
    let shared = Arc::new(Shared {
        backend,
        permits: Semaphore::new(limits.max_concurrent.max(1)),
        limits: limits.clone(),
    });
    Router::new()
        .route("/rpc/v1", post(rpc_handler))
        .route("/health", get(health_handler))
        .route("/metrics", get(metrics_handler))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .with_state(shared)
}

/// Binds `addr` and serves until `shutdown` resolves. Returns the bound
/// address (port 0 picks a free port) once listening.
pub async fn serve(
    addr: SocketAddr,
    backend: Arc<dyn RpcBackend>,
    limits: RpcLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(backend, limits);
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

async fn health_handler(State(s): State<Arc<Shared>>) -> Response {
    let h = s.backend.health().await;
    let code = if h.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(h)).into_response()
}

async fn metrics_handler(State(s): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.backend.metrics_text(),
    )
        .into_response()
}

async fn rpc_handler(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let Ok(_permit) = s.permits.try_acquire() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(error_response(
                Value::Null,
                RpcError::busy("too many concurrent requests"),
            )),
        )
            .into_response();
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
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                if let Some(r) = one_request(&s, item).await {
                    out.push(r);
                }
            }
            axum::Json(Value::Array(out)).into_response()
        }
        single => match one_request(&s, single).await {
            Some(r) => axum::Json(r).into_response(),
            None => StatusCode::NO_CONTENT.into_response(),
        },
    }
}

/// Handles one request object; `None` for a notification (no id).
async fn one_request(s: &Shared, req: Value) -> Option<Value> {
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
    let timeout = if method == "broadcast_tx" {
        s.limits.commit_timeout.max(s.limits.request_timeout)
    } else {
        s.limits.request_timeout
    };
    let result = match tokio::time::timeout(timeout, dispatch(s, &method, params)).await {
        Ok(r) => r,
        Err(_) => Err(RpcError::new(
            TIMEOUT,
            "timeout",
            format!("{method} took longer than {timeout:?}"),
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
