//! The admin listener: operator-only JSON-RPC methods (ban, unban, add and
//! remove peers), apart from the public RPC.
//!
//! It is off unless `admin.listen` is set, and it only listens where other
//! machines cannot reach it: a unix socket (`unix:PATH`, created with mode
//! 0600, so only the node's user can call it) or a loopback TCP address
//! (`127.0.0.1:PORT`, `[::1]:PORT`). Over TCP, a request must carry a
//! localhost `Host` and `Content-Type: application/json`, so a web page in a
//! browser on the same machine can neither post to it (the JSON type needs
//! a CORS preflight, which is never answered) nor read it through DNS
//! rebinding (its `Host` would be its own name).
//!
//! Requests are bounded: 64 KiB of body, 8 at once (more get 503), 10 s
//! each. [`AdminClient`] is the client `kite peers ban|unban|add|remove`
//! uses.

use crate::p2p::{HostHandle, Multiaddr, OperatorOp, OperatorOutcome, PeerId};
use crate::rpc::access::{LOCAL_HOSTS, parse_host};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Largest admin request body.
pub const MAX_BODY: usize = 64 * 1024;
/// Most admin requests served at once; more get HTTP 503.
pub const MAX_CONCURRENT: usize = 8;
/// Deadline of one admin request.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Ban length when a `peers_ban` call names none.
pub const DEFAULT_BAN: Duration = Duration::from_secs(24 * 3600);
/// Longest ban an operator can set (a longer one is refused, not cut).
pub const MAX_BAN: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Where the admin listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminListen {
    /// A unix socket at this path.
    Unix(PathBuf),
    /// A loopback TCP address.
    Tcp(SocketAddr),
}

impl AdminListen {
    /// Parses `admin.listen`: `""` (off: `None`), `unix:PATH` (a relative
    /// path is under `home`) or a loopback `IP:PORT`. Any other address is
    /// refused: the admin methods must not be reachable from other
    /// machines.
    pub fn parse(text: &str, home: &Path) -> Result<Option<AdminListen>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        if let Some(path) = text.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err("unix: needs a path, e.g. unix:admin.sock".into());
            }
            return Ok(Some(AdminListen::Unix(home.join(path))));
        }
        let addr: SocketAddr = text.parse().map_err(|_| {
            format!(
                "{text:?} is neither unix:PATH nor IP:PORT (e.g. unix:admin.sock or \
                 127.0.0.1:26659)"
            )
        })?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{addr} is not a loopback address: the admin listener must only be reachable \
                 from this machine (use 127.0.0.1:PORT, [::1]:PORT or unix:PATH)"
            ));
        }
        Ok(Some(AdminListen::Tcp(addr)))
    }
}

impl std::fmt::Display for AdminListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminListen::Unix(p) => write!(f, "unix:{}", p.display()),
            AdminListen::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// `peers_ban` params.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanParams {
    /// The peer id.
    pub peer: String,
    /// How long, as text (`"1h"`, `"30m"`); [`DEFAULT_BAN`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

/// `peers_unban` and `peers_remove` params.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerParams {
    /// The peer id.
    pub peer: String,
}

/// `peers_add` params.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddParams {
    /// A multiaddr ending in `/p2p/<peer id>`.
    pub addr: String,
}

/// What a `peers_*` method answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerOpResult {
    /// Whether anything changed (false: unban of a peer that was not
    /// banned, remove of an unknown peer, add of a peer already kept).
    pub changed: bool,
    /// Whether the peer was connected when the call ran.
    pub was_connected: bool,
}

impl From<OperatorOutcome> for PeerOpResult {
    fn from(o: OperatorOutcome) -> PeerOpResult {
        PeerOpResult {
            changed: o.changed,
            was_connected: o.was_connected,
        }
    }
}

/// A JSON-RPC error of the admin listener.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AdminError {
    code: i64,
    message: String,
}

impl AdminError {
    fn params(message: impl Into<String>) -> AdminError {
        AdminError {
            code: crate::rpc::INVALID_PARAMS,
            message: message.into(),
        }
    }
}

struct Server {
    host: HostHandle,
    permits: Semaphore,
    /// Whether to check `Host` (TCP; a unix socket is guarded by its mode).
    check_host: bool,
}

/// The admin router (for tests: drive it with `tower::ServiceExt`).
/// `check_host` turns on the localhost `Host` check (TCP listeners).
pub fn router(host: HostHandle, check_host: bool) -> Router {
    let server = Arc::new(Server {
        host,
        permits: Semaphore::new(MAX_CONCURRENT),
        check_host,
    });
    Router::new()
        .route("/", axum::routing::post(handle))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(server)
}

/// Starts the admin listener; returns where it listens and its task, which
/// ends once `shutdown` resolves (a unix socket file is removed then).
pub async fn serve(
    listen: &AdminListen,
    host: HostHandle,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(AdminListen, tokio::task::JoinHandle<()>)> {
    match listen {
        AdminListen::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            let bound = AdminListen::Tcp(listener.local_addr()?);
            let task = spawn_server(listener, router(host, true), shutdown, || ());
            Ok((bound, task))
        }
        AdminListen::Unix(path) => {
            let listener = bind_private_socket(path)?;
            let owned = path.clone();
            let cleanup = move || {
                let _ = std::fs::remove_file(&owned);
            };
            let task = spawn_server(listener, router(host, false), shutdown, cleanup);
            Ok((AdminListen::Unix(path.clone()), task))
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, then runs `cleanup`.
fn spawn_server<L>(
    listener: L,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    cleanup: impl FnOnce() + Send + 'static,
) -> tokio::task::JoinHandle<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "admin listener stopped");
        }
        cleanup();
    })
}

/// Binds a unix socket at `path` that only this user can connect to: it
/// is created inside a fresh directory of mode 0700, set to mode 0600, and
/// only then moved to `path`, so no other user can connect in between. A
/// socket left at `path` by a node that was killed is replaced; anything
/// else there is the operator's, and is refused.
fn bind_private_socket(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(_) => {}
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let private = dir.join(format!(
        ".admin-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("admin.sock");
    let bound = (|| {
        let listener = tokio::net::UnixListener::bind(&staged)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    bound
}

fn refuse(status: StatusCode, message: String) -> Response {
    let body = json!({"jsonrpc": "2.0", "id": null,
        "error": {"code": crate::rpc::INVALID_REQUEST, "message": message}});
    (status, axum::Json(body)).into_response()
}

fn host_is_local(headers: &HeaderMap) -> bool {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(parse_host)
        .is_some_and(|(h, _)| LOCAL_HOSTS.contains(&h.as_str()))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

async fn handle(State(s): State<Arc<Server>>, req: Request<Body>) -> Response {
    let Ok(_permit) = s.permits.try_acquire() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("busy: {MAX_CONCURRENT} admin requests are in progress"),
        );
    };
    if s.check_host && !host_is_local(req.headers()) {
        return refuse(
            StatusCode::FORBIDDEN,
            "the admin listener only answers requests to localhost".into(),
        );
    }
    if !is_json(req.headers()) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "an admin request must be sent with Content-Type: application/json".into(),
        );
    }
    let work = async {
        let body = axum::body::to_bytes(req.into_body(), MAX_BODY).await;
        let body: Bytes = match body {
            Ok(b) => b,
            Err(e) => {
                return refuse(StatusCode::PAYLOAD_TOO_LARGE, format!("bad body: {e}"));
            }
        };
        let req: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("not JSON: {e}")),
        };
        let id = req.get("id").cloned().unwrap_or(Value::Null);
        let Some(method) = req.get("method").and_then(Value::as_str) else {
            return refuse(StatusCode::BAD_REQUEST, "no method".into());
        };
        let params = req.get("params").cloned().unwrap_or(json!({}));
        let out = match call(&s.host, method, params).await {
            Ok(v) => json!({"jsonrpc": "2.0", "id": id, "result": v}),
            Err(e) => json!({"jsonrpc": "2.0", "id": id,
                "error": {"code": e.code, "message": e.message}}),
        };
        axum::Json(out).into_response()
    };
    match tokio::time::timeout(TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => refuse(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request did not finish within {TIMEOUT:?}"),
        ),
    }
}

fn parse_params<T: serde::de::DeserializeOwned>(p: Value) -> Result<T, AdminError> {
    serde_json::from_value(p).map_err(|e| AdminError::params(e.to_string()))
}

fn parse_peer(s: &str) -> Result<PeerId, AdminError> {
    s.trim()
        .parse()
        .map_err(|_| AdminError::params(format!("{s:?} is not a peer id (12D3KooW...)")))
}

/// Parses a ban length (`"1h"`, `"90s"`), at most [`MAX_BAN`].
pub fn parse_ban(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("ban duration {text:?}: {e} (write e.g. 30m, 1h, 7days)"))?;
    if d.is_zero() || d > MAX_BAN {
        return Err(format!(
            "ban duration {text:?} must be more than 0 and at most 10 years"
        ));
    }
    Ok(d)
}

async fn call(host: &HostHandle, method: &str, p: Value) -> Result<Value, AdminError> {
    let op = match method {
        "peers_ban" => {
            let p: BanParams = parse_params(p)?;
            let duration = match &p.duration {
                Some(d) => parse_ban(d).map_err(AdminError::params)?,
                None => DEFAULT_BAN,
            };
            OperatorOp::Ban {
                peer: parse_peer(&p.peer)?,
                duration,
            }
        }
        "peers_unban" => OperatorOp::Unban {
            peer: parse_peer(&parse_params::<PeerParams>(p)?.peer)?,
        },
        "peers_remove" => OperatorOp::Remove {
            peer: parse_peer(&parse_params::<PeerParams>(p)?.peer)?,
        },
        "peers_add" => {
            let p: AddParams = parse_params(p)?;
            let addr: Multiaddr = p.addr.trim().parse().map_err(|_| {
                AdminError::params(format!(
                    "{:?} is not a multiaddr (e.g. /ip4/10.0.0.5/tcp/26656/p2p/12D3KooW...)",
                    p.addr
                ))
            })?;
            OperatorOp::Add { addr }
        }
        other => {
            return Err(AdminError {
                code: crate::rpc::METHOD_NOT_FOUND,
                message: format!(
                    "no admin method {other:?} (peers_ban, peers_unban, peers_add, peers_remove)"
                ),
            });
        }
    };
    let outcome = host.operator(op).await.map_err(|e| AdminError {
        code: crate::rpc::INVALID_PARAMS,
        message: e.to_string(),
    })?;
    serde_json::to_value(PeerOpResult::from(outcome)).map_err(|e| AdminError {
        code: crate::rpc::INTERNAL_ERROR,
        message: e.to_string(),
    })
}

/// A client of the admin listener (what `kite peers ban ...` uses).
#[derive(Debug, Clone)]
pub struct AdminClient {
    at: AdminListen,
    timeout: Duration,
}

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    /// The listener could not be reached.
    #[error(
        "cannot reach the admin listener at {at}: {reason} (is the node running with admin.listen set?)"
    )]
    Connect {
        /// Where.
        at: String,
        /// Why.
        reason: String,
    },
    /// The exchange failed or took too long.
    #[error("admin call to {at} failed: {reason}")]
    Exchange {
        /// Where.
        at: String,
        /// Why.
        reason: String,
    },
    /// The node refused the call.
    #[error("{method}: {message}")]
    Refused {
        /// The method.
        method: String,
        /// The node's reason.
        message: String,
    },
}

impl AdminClient {
    /// A client of the listener at `at`; each call has `timeout`.
    pub fn new(at: AdminListen, timeout: Duration) -> AdminClient {
        AdminClient { at, timeout }
    }

    /// Calls `method` with `params`.
    pub async fn call<P: Serialize>(
        &self,
        method: &str,
        params: P,
    ) -> Result<PeerOpResult, AdminClientError> {
        let at = self.at.to_string();
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let exchange = |reason: String| AdminClientError::Exchange {
            at: at.clone(),
            reason,
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| exchange(e.to_string()))?;
        let answer = tokio::time::timeout(self.timeout, self.post(bytes))
            .await
            .map_err(|_| exchange(format!("no answer within {:?}", self.timeout)))??;
        let v: Value = serde_json::from_slice(&answer)
            .map_err(|e| exchange(format!("the answer is not JSON: {e}")))?;
        if let Some(e) = v.get("error") {
            return Err(AdminClientError::Refused {
                method: method.to_owned(),
                message: e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_owned(),
            });
        }
        serde_json::from_value(v.get("result").cloned().unwrap_or(Value::Null))
            .map_err(|e| exchange(format!("unexpected result: {e}")))
    }

    async fn post(&self, body: Vec<u8>) -> Result<Bytes, AdminClientError> {
        let at = self.at.to_string();
        let connect = |e: std::io::Error| AdminClientError::Connect {
            at: at.clone(),
            reason: e.to_string(),
        };
        match &self.at {
            AdminListen::Tcp(addr) => {
                let io = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(connect)?;
                let host = match addr.ip() {
                    IpAddr::V4(_) => "127.0.0.1".to_owned(),
                    IpAddr::V6(_) => "[::1]".to_owned(),
                };
                exchange(io, &host, body, &at).await
            }
            AdminListen::Unix(path) => {
                let io = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(connect)?;
                exchange(io, "localhost", body, &at).await
            }
        }
    }
}

/// One HTTP/1.1 POST over `io`.
async fn exchange<IO>(
    io: IO,
    host: &str,
    body: Vec<u8>,
    at: &str,
) -> Result<Bytes, AdminClientError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::{BodyExt, Full, Limited};
    let err = |reason: String| AdminClientError::Exchange {
        at: at.to_owned(),
        reason,
    };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| err(e.to_string()))?;
    let driver = tokio::spawn(conn);
    let req = Request::post("/")
        .header(header::HOST, host)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| err(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| err(e.to_string()));
    let out = match resp {
        Ok(resp) => Limited::new(resp.into_body(), 1 << 20)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| err(e.to_string())),
        Err(e) => Err(e),
    };
    driver.abort();
    out
}
