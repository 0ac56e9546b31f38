//! The admin listener: operator-only JSON-RPC methods (ban, unban, add and
//! remove peers; hand leadership over), apart from the public RPC.
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
//! and `kite admin leader` use.

use crate::mailbox::LeaderRequests;
use crate::p2p::{HostHandle, Multiaddr, Network, OperatorOp, OperatorOutcome, PeerId};
use crate::rpc::access::{LOCAL_HOSTS, parse_host};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kite_consensus::HandOver;
use kite_types::{PublicKey, Validator};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Largest admin request body.
pub const MAX_BODY: usize = 64 * 1024;
/// Most admin requests served at once; more get HTTP 503. The same as the
/// capacity of the hand-over mailbox, so a served request always finds
/// room there.
pub const MAX_CONCURRENT: usize = crate::mailbox::LEADER_QUEUE;
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

/// `leader_handover` params.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderParams {
    /// The validator that should lead: its public key (hex) or its name in
    /// the genesis.
    pub to: String,
    /// On a validator: leave the term even though its leader looks alive
    /// (the operator knows it is down).
    #[serde(default)]
    pub force: bool,
}

/// The part a node plays in a hand-over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActingAs {
    /// This node leads: it hands over once its current height is done.
    Leader,
    /// This validator leaves its term now (the way when the leader is
    /// down; the new leader takes over once validators holding a quorum
    /// have left).
    Validator,
}

/// What `leader_handover` answers: what this node does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderResult {
    /// The validator that is to lead.
    pub to: PublicKey,
    /// Its genesis name (empty when it has none).
    #[serde(default)]
    pub name: String,
    /// What this node does, as leader or as a validator.
    pub acting_as: ActingAs,
    /// The term this node is in.
    pub from_term: u64,
    /// The term the named validator leads.
    pub to_term: u64,
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

/// What the admin methods act on.
#[derive(Debug, Clone)]
pub struct AdminTargets {
    /// The network (the `peers_*` methods).
    pub host: Arc<dyn Network>,
    /// The engine driver (`leader_handover`); None on a node without one
    /// (the method is then refused).
    pub leader: Option<LeaderRequests>,
    /// The genesis validators (to find one by name).
    pub validators: Vec<Validator>,
}

impl From<HostHandle> for AdminTargets {
    fn from(host: HostHandle) -> AdminTargets {
        AdminTargets {
            host: Arc::new(host),
            leader: None,
            validators: Vec::new(),
        }
    }
}

struct Server {
    targets: AdminTargets,
    permits: Semaphore,
    /// Whether to check `Host` (TCP; a unix socket is guarded by its mode).
    check_host: bool,
}

/// The admin router (for tests: drive it with `tower::ServiceExt`).
/// `check_host` turns on the localhost `Host` check (TCP listeners).
pub fn router(targets: impl Into<AdminTargets>, check_host: bool) -> Router {
    let server = Arc::new(Server {
        targets: targets.into(),
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
    targets: impl Into<AdminTargets>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(AdminListen, tokio::task::JoinHandle<()>)> {
    match listen {
        AdminListen::Tcp(addr) => {
            let host = targets.into();
            let listener = tokio::net::TcpListener::bind(addr).await?;
            let bound = AdminListen::Tcp(listener.local_addr()?);
            let task = spawn_server(listener, router(host, true), shutdown, || ());
            Ok((bound, task))
        }
        AdminListen::Unix(path) => {
            let host = targets.into();
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
        let out = match call(&s.targets, method, params).await {
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

/// Finds the validator `text` names: a public key in hex, or a genesis
/// name.
fn find_validator<'a>(validators: &'a [Validator], text: &str) -> Result<&'a Validator, String> {
    let text = text.trim();
    if let Ok(key) = text.parse::<PublicKey>() {
        return validators
            .iter()
            .find(|v| v.pub_key == key)
            .ok_or_else(|| format!("{key} is not a genesis validator"));
    }
    let named: Vec<&Validator> = validators.iter().filter(|v| v.name == text).collect();
    match named.as_slice() {
        [v] => Ok(v),
        [] => Err(format!(
            "{text:?} is neither a validator's public key (64 hex digits) nor a validator's name \
             in the genesis ({})",
            validators
                .iter()
                .filter(|v| !v.name.is_empty())
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        _ => Err(format!(
            "several genesis validators are named {text:?}: give the public key"
        )),
    }
}

/// `leader_handover`: asks the engine driver for the named validator to
/// lead, and answers what this node does.
async fn hand_over(t: &AdminTargets, p: Value) -> Result<Value, AdminError> {
    let p: LeaderParams = parse_params(p)?;
    let v = find_validator(&t.validators, &p.to).map_err(AdminError::params)?;
    let Some(leader) = &t.leader else {
        return Err(AdminError::params("this node runs no commit engine"));
    };
    let plan = leader
        .hand_over(v.pub_key, p.force)
        .await
        .map_err(|e| AdminError {
            code: crate::rpc::INTERNAL_ERROR,
            message: e.to_string(),
        })?
        .map_err(|e| AdminError::params(e.to_string()))?;
    let (acting_as, from_term, to_term) = match plan {
        HandOver::Leader { from, to } => (ActingAs::Leader, from, to),
        HandOver::Validator { from, to } => (ActingAs::Validator, from, to),
    };
    let r = LeaderResult {
        to: v.pub_key,
        name: v.name.clone(),
        acting_as,
        from_term,
        to_term,
    };
    serde_json::to_value(r).map_err(|e| AdminError {
        code: crate::rpc::INTERNAL_ERROR,
        message: e.to_string(),
    })
}

async fn call(t: &AdminTargets, method: &str, p: Value) -> Result<Value, AdminError> {
    let host = &t.host;
    let op = match method {
        "leader_handover" => return hand_over(t, p).await,
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
                    "no admin method {other:?} (peers_ban, peers_unban, peers_add, peers_remove, \
                     leader_handover)"
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

    /// Calls the `peers_*` method `method` with `params`.
    pub async fn call<P: Serialize>(
        &self,
        method: &str,
        params: P,
    ) -> Result<PeerOpResult, AdminClientError> {
        self.call_as(method, params).await
    }

    /// Calls `leader_handover`: asks for `to` (a validator's public key or
    /// genesis name) to lead; `force` on a validator whose leader looks
    /// alive.
    pub async fn leader_handover(
        &self,
        to: &str,
        force: bool,
    ) -> Result<LeaderResult, AdminClientError> {
        let params = LeaderParams {
            to: to.to_owned(),
            force,
        };
        self.call_as("leader_handover", params).await
    }

    /// Calls `method` with `params`; `R` is what it answers.
    async fn call_as<P: Serialize, R: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        params: P,
    ) -> Result<R, AdminClientError> {
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
