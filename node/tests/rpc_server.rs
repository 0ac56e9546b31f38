//! The JSON-RPC server against a fake backend: envelope rules, named
//! params, error objects, limits, health codes; one deadline per batch,
//! the Content-Type, Host and Origin checks, and /health and /metrics under
//! the same limits as the RPC.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use kite_node::rpc::access::HostAllowList;
use kite_node::rpc::*;
use kite_types::{Hash, PublicKey};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tower::ServiceExt;

/// The Host every test request carries unless it tests the Host check.
const HOST: &str = "127.0.0.1:26657";

/// A backend whose answers are canned: `broadcast_tx` of the tx "stuck"
/// with `wait: "commit"` and `status` never answer; `peers` answers after
/// `peers_delay`; `health` never answers while `hang_health` is set.
#[derive(Default)]
struct Fake {
    healthy: AtomicBool,
    hang_health: AtomicBool,
    peers_delay: Duration,
    access: RpcAccess,
    /// Notified when a stuck commit wait has started (holds its permit).
    stuck: tokio::sync::Notify,
}

#[async_trait]
impl RpcBackend for Fake {
    async fn broadcast_tx(&self, tx: Vec<u8>, wait: WaitFor) -> Result<BroadcastResult, RpcError> {
        if tx == b"stuck" && wait == WaitFor::Commit {
            self.stuck.notify_one();
            std::future::pending::<()>().await;
        }
        if tx == b"bad" {
            return Err(RpcError::tx_refused(
                "nonce_too_low",
                "nonce too low: have 7, account at 9",
            ));
        }
        Ok(BroadcastResult {
            hash: Hash::digest(&tx),
            height: (wait == WaitFor::Commit).then_some(5),
        })
    }
    async fn tx_query(&self, _hash: Hash) -> Result<TxStatus, RpcError> {
        Ok(TxStatus {
            status: "unknown".into(),
            height: None,
            index: None,
        })
    }
    async fn block(&self, q: BlockQuery) -> Result<BlockView, RpcError> {
        Err(RpcError::not_found(format!("no block {q:?}")))
    }
    async fn status(&self) -> Result<StatusView, RpcError> {
        std::future::pending().await
    }
    async fn peers(&self) -> Result<Vec<PeerView>, RpcError> {
        tokio::time::sleep(self.peers_delay).await;
        Ok(vec![])
    }
    async fn validators(&self) -> Result<ValidatorsView, RpcError> {
        Err(RpcError::internal("unused"))
    }
    async fn account(&self, _id: PublicKey) -> Result<AccountView, RpcError> {
        Ok(AccountView {
            balance: 10,
            nonce: 2,
            next_nonce: 3,
        })
    }
    async fn kv_get(&self, _o: PublicKey, key: Vec<u8>) -> Result<KvView, RpcError> {
        Ok(KvView {
            found: true,
            value: Some(String::from_utf8_lossy(&key).into()),
            value_hex: None,
        })
    }
    async fn health(&self) -> HealthView {
        if self.hang_health.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
        HealthView {
            healthy: self.healthy.load(Ordering::Relaxed),
            reason: String::new(),
            height: 1,
        }
    }
    fn metrics_text(&self) -> String {
        "# EOF\n".into()
    }
}

/// Sends `req`: the status, the headers and the body as JSON (null when
/// it is not JSON).
async fn send(app: &axum::Router, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A JSON POST of `body` to /rpc/v1 from localhost.
fn post(body: &str) -> Request<Body> {
    Request::post("/rpc/v1")
        .header("host", HOST)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

/// A GET of `path` from localhost.
fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header("host", HOST)
        .body(Body::empty())
        .unwrap()
}

async fn call(app: &axum::Router, body: &str) -> (StatusCode, Value) {
    let (status, _, v) = send(app, post(body)).await;
    (status, v)
}

fn app(fake: Arc<Fake>) -> axum::Router {
    let access = fake.access.clone();
    router(
        fake,
        RpcLimits {
            max_body_bytes: 4096,
            access,
            ..RpcLimits::default()
        },
    )
}

#[tokio::test]
async fn methods_and_errors() {
    let a = app(Arc::new(Fake::default()));
    let (_, v) = call(
        &a,
        r#"{"jsonrpc":"2.0","id":1,"method":"broadcast_tx","params":{"tx":"6f6b","wait":"commit"}}"#,
    )
    .await;
    assert_eq!(v["id"], 1);
    assert_eq!(v["result"]["height"], 5);
    assert_eq!(v["result"]["hash"], Hash::digest(b"ok").to_string());

    let (_, v) = call(
        &a,
        r#"{"jsonrpc":"2.0","id":"x","method":"broadcast_tx","params":{"tx":"626164"}}"#,
    )
    .await;
    assert_eq!(v["error"]["code"], TX_REFUSED);
    assert_eq!(v["error"]["data"]["code"], "nonce_too_low");
    assert!(v["error"]["message"].as_str().unwrap().contains("have 7"));

    let (_, v) = call(&a, r#"{"jsonrpc":"2.0","id":2,"method":"nope"}"#).await;
    assert_eq!(v["error"]["code"], METHOD_NOT_FOUND);

    let (_, v) = call(
        &a,
        r#"{"jsonrpc":"2.0","id":3,"method":"account","params":["positional"]}"#,
    )
    .await;
    assert_eq!(v["error"]["code"], INVALID_PARAMS);

    let (_, v) = call(
        &a,
        r#"{"jsonrpc":"2.0","id":3,"method":"account","params":{"id":"zz"}}"#,
    )
    .await;
    assert_eq!(v["error"]["code"], INVALID_PARAMS);

    let id = PublicKey([1; 32]).to_string();
    let req = json!({"jsonrpc":"2.0","id":4,"method":"account","params":{"id": id}});
    let (_, v) = call(&a, &req.to_string()).await;
    assert_eq!(v["result"], json!({"balance":10,"nonce":2,"next_nonce":3}));

    let (_, v) = call(
        &a,
        r#"{"jsonrpc":"2.0","id":5,"method":"block","params":{"height":1,"hash":"00"}}"#,
    )
    .await;
    assert_eq!(v["error"]["code"], INVALID_PARAMS);
    let (_, v) = call(
        &a,
        r#"{"jsonrpc":"2.0","id":5,"method":"block","params":{"height":9}}"#,
    )
    .await;
    assert_eq!(v["error"]["code"], NOT_FOUND);

    let (_, v) = call(&a, r#"{"id":6,"method":"status"}"#).await;
    assert_eq!(v["error"]["code"], INVALID_REQUEST);
    let (_, v) = call(&a, "{not json").await;
    assert_eq!(v["error"]["code"], PARSE_ERROR);
    let (_, v) = call(
        &a,
        r#"{"jsonrpc":"2.0","id":7,"method":"peers","params":{"extra":1}}"#,
    )
    .await;
    assert_eq!(v["error"]["code"], INVALID_PARAMS);
}

#[tokio::test]
async fn batches_and_notifications() {
    let a = app(Arc::new(Fake::default()));
    let (_, v) = call(
        &a,
        r#"[{"jsonrpc":"2.0","id":1,"method":"peers"},{"jsonrpc":"2.0","method":"peers"},{"jsonrpc":"2.0","id":2,"method":"health"}]"#,
    )
    .await;
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2, "the notification gets no answer");
    let (_, v) = call(&a, "[]").await;
    assert_eq!(v["error"]["code"], INVALID_REQUEST);
    let big: Vec<Value> = (0..=MAX_BATCH)
        .map(|i| json!({"jsonrpc":"2.0","id":i,"method":"peers"}))
        .collect();
    let roomy = router(Arc::new(Fake::default()), RpcLimits::default());
    let (_, v) = call(&roomy, &Value::Array(big).to_string()).await;
    assert_eq!(v["error"]["code"], INVALID_REQUEST);
}

#[tokio::test]
async fn body_limit_and_health_codes() {
    let fake = Arc::new(Fake::default());
    let a = app(fake.clone());
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"broadcast_tx","params":{{"tx":"{}"}}}}"#,
        "00".repeat(5000)
    );
    let (status, _) = call(&a, &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    let r = a.clone().oneshot(get("/health")).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    fake.healthy.store(true, Ordering::Relaxed);
    let r = a.clone().oneshot(get("/health")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = a.clone().oneshot(get("/metrics")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// Limits with short deadlines: 1 s per request, 3 s for a commit wait.
fn quick() -> RpcLimits {
    RpcLimits {
        request_timeout: Duration::from_secs(1),
        commit_timeout: Duration::from_secs(3),
        ..RpcLimits::default()
    }
}

fn assert_timeout(v: &Value) {
    assert_eq!(v["error"]["code"], TIMEOUT, "{v}");
    assert_eq!(v["error"]["data"]["code"], "timeout", "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
}

/// 100 commit waits that never end hold the request for the commit timeout
/// once, not 100 times; an ordinary item of the batch gets the request
/// timeout, counted from the start of the request.
#[tokio::test(start_paused = true)]
async fn batch_shares_one_deadline() {
    let a = router(Arc::new(Fake::default()), quick());
    let stuck = hex::encode(b"stuck");
    let mut items: Vec<Value> = (0..MAX_BATCH - 1)
        .map(|i| {
            json!({"jsonrpc":"2.0","id":i,"method":"broadcast_tx","params":{"tx":stuck,"wait":"commit"}})
        })
        .collect();
    items.push(json!({"jsonrpc":"2.0","id":"s","method":"status"}));
    let start = Instant::now();
    let (status, v) = call(&a, &Value::Array(items).to_string()).await;
    let took = start.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert!(
        took <= Duration::from_millis(3100),
        "the batch took {took:?}, more than the 3 s commit timeout"
    );
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), MAX_BATCH);
    for (i, item) in arr.iter().enumerate().take(MAX_BATCH - 1) {
        assert_eq!(item["id"], i);
        assert_timeout(item);
    }
    assert_eq!(arr[MAX_BATCH - 1]["id"], "s");
    assert_timeout(&arr[MAX_BATCH - 1]);

    // One request alone: the request timeout.
    let start = Instant::now();
    let (_, v) = call(&a, r#"{"jsonrpc":"2.0","id":1,"method":"status"}"#).await;
    assert_timeout(&v);
    assert!(start.elapsed() <= Duration::from_millis(1100));
}

/// The items of a batch run at once: three 600 ms calls answer within the
/// 1 s request timeout, next to one that never answers.
#[tokio::test(start_paused = true)]
async fn batch_items_run_concurrently() {
    let fake = Fake {
        peers_delay: Duration::from_millis(600),
        ..Fake::default()
    };
    let a = router(Arc::new(fake), quick());
    let start = Instant::now();
    let (_, v) = call(
        &a,
        r#"[{"jsonrpc":"2.0","id":1,"method":"peers"},{"jsonrpc":"2.0","id":2,"method":"status"},{"jsonrpc":"2.0","id":3,"method":"peers"},{"jsonrpc":"2.0","id":4,"method":"peers"}]"#,
    )
    .await;
    let took = start.elapsed();
    assert!(took <= Duration::from_millis(1100), "took {took:?}");
    let arr = v.as_array().unwrap();
    let ids: Vec<i64> = arr.iter().map(|x| x["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3, 4], "answers keep the order of the batch");
    for i in [0, 2, 3] {
        assert_eq!(arr[i]["result"], json!([]), "{}", arr[i]);
    }
    assert_timeout(&arr[1]);
}

/// POST bodies must be declared JSON: a web page's text/plain or form post
/// is refused with 415 and a JSON-RPC error saying what to send.
#[tokio::test]
async fn post_needs_json_content_type() {
    let a = app(Arc::new(Fake::default()));
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"peers"}"#;
    for ct in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonx"),
        Some("application/json; charset=latin1"),
        Some("application/json; foo=bar"),
        None,
    ] {
        let mut req = Request::post("/rpc/v1").header("host", HOST);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let (status, _, v) = send(&a, req.body(Body::from(body)).unwrap()).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        assert_eq!(v["error"]["code"], INVALID_REQUEST, "{ct:?}: {v}");
        assert_eq!(v["error"]["data"]["code"], "unsupported_media_type");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("application/json"), "{msg}");
    }
    for ct in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        "application/json; charset=\"utf-8\"",
    ] {
        let req = Request::post("/rpc/v1")
            .header("host", HOST)
            .header("content-type", ct)
            .body(Body::from(body))
            .unwrap();
        let (status, _, v) = send(&a, req).await;
        assert_eq!(status, StatusCode::OK, "{ct}");
        assert_eq!(v["result"], json!([]), "{ct}");
    }
}

/// Only localhost names (any port) pass the Host check by default, on
/// every route: a DNS name that a web page re-pointed at 127.0.0.1 does
/// not.
#[tokio::test]
async fn host_allow_list_by_default() {
    let fake = Arc::new(Fake::default());
    fake.healthy.store(true, Ordering::Relaxed);
    let a = app(fake);
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"peers"}"#;
    for host in [
        "localhost",
        "localhost:26657",
        "LocalHost:1",
        "127.0.0.1",
        "127.0.0.1:8080",
        "[::1]",
        "[::1]:26657",
    ] {
        let req = Request::post("/rpc/v1")
            .header("host", host)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let (status, _, _) = send(&a, req).await;
        assert_eq!(status, StatusCode::OK, "{host}");
    }
    for host in [
        "evil.example",
        "evil.example:26657",
        "localhost.evil.example:26657",
        "127.0.0.1.evil.example",
        "10.0.0.5:26657",
        "[::2]:26657",
        "127.0.0.1:notaport",
        "",
    ] {
        let req = Request::post("/rpc/v1")
            .header("host", host)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let (status, _, v) = send(&a, req).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{host:?}");
        assert_eq!(v["error"]["data"]["code"], "host_not_allowed", "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("rpc.allowed_hosts"), "{msg}");
        for path in ["/health", "/metrics"] {
            let req = Request::get(path)
                .header("host", host)
                .body(Body::empty())
                .unwrap();
            let (status, _, _) = send(&a, req).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path} {host:?}");
        }
    }
}

/// A request from a web page (it carries Origin) is refused unless its
/// origin is configured, preflight included.
#[tokio::test]
async fn origin_refused_by_default() {
    let fake = Arc::new(Fake::default());
    fake.healthy.store(true, Ordering::Relaxed);
    let a = app(fake);
    let req = Request::post("/rpc/v1")
        .header("host", HOST)
        .header("origin", "https://evil.example")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"jsonrpc":"2.0","id":1,"method":"peers"}"#))
        .unwrap();
    let (status, headers, v) = send(&a, req).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(headers.get("access-control-allow-origin").is_none());
    assert_eq!(v["error"]["data"]["code"], "origin_not_allowed", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("rpc.cors_origins"), "{msg}");

    let req = Request::get("/health")
        .header("host", HOST)
        .header("origin", "null")
        .body(Body::empty())
        .unwrap();
    let (status, _, _) = send(&a, req).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let req = Request::options("/rpc/v1")
        .header("host", HOST)
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = send(&a, req).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(headers.get("access-control-allow-origin").is_none());
}

/// /health and /metrics take a permit like an RPC call: with the one
/// permit held by a commit wait, they answer 503 busy.
#[tokio::test]
async fn health_and_metrics_share_the_concurrency_limit() {
    let fake = Arc::new(Fake::default());
    fake.healthy.store(true, Ordering::Relaxed);
    let a = router(
        fake.clone(),
        RpcLimits {
            max_concurrent: 1,
            ..RpcLimits::default()
        },
    );
    let holder = {
        let a = a.clone();
        let stuck = hex::encode(b"stuck");
        tokio::spawn(async move {
            let body = json!({"jsonrpc":"2.0","id":1,"method":"broadcast_tx","params":{"tx":stuck,"wait":"commit"}});
            call(&a, &body.to_string()).await
        })
    };
    // The commit wait holds the one permit.
    fake.stuck.notified().await;
    for path in ["/health", "/metrics"] {
        let (status, _, v) = send(&a, get(path)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(v["error"]["code"], BUSY, "{path}: {v}");
        assert_eq!(v["error"]["data"]["code"], "busy", "{path}: {v}");
    }
    let (status, v) = call(&a, r#"{"jsonrpc":"2.0","id":2,"method":"peers"}"#).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["error"]["code"], BUSY);
    holder.abort();
    let _ = holder.await;
    let (status, _, _) = send(&a, get("/health")).await;
    assert_eq!(status, StatusCode::OK, "the permit came back");
}

/// /health has the request timeout: a health check that hangs answers 503
/// (unhealthy, saying why) once it passes.
#[tokio::test(start_paused = true)]
async fn health_has_the_request_deadline() {
    let fake = Arc::new(Fake::default());
    fake.healthy.store(true, Ordering::Relaxed);
    fake.hang_health.store(true, Ordering::Relaxed);
    let a = router(fake, quick());
    let start = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(30), send(&a, get("/health"))).await;
    let (status, _, v) = r.expect("/health never answered");
    assert!(start.elapsed() <= Duration::from_millis(1100));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["healthy"], false, "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("rpc.request_timeout"),
        "{v}"
    );
}

fn peers_from(host: &str, origin: Option<&str>) -> Request<Body> {
    let mut req = Request::post("/rpc/v1")
        .header("host", host)
        .header("content-type", "application/json");
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    req.body(Body::from(r#"{"jsonrpc":"2.0","id":1,"method":"peers"}"#))
        .unwrap()
}

/// `rpc.allowed_hosts` adds names (any port) and name:port pairs; `"*"`
/// turns the check off.
#[tokio::test]
async fn allowed_hosts_extend_the_list() {
    let fake = Fake {
        access: RpcAccess {
            allowed_hosts: vec!["node.example".into(), "10.0.0.5:8080".into()],
            ..RpcAccess::default()
        },
        ..Fake::default()
    };
    let a = app(Arc::new(fake));
    for (host, want) in [
        ("node.example", StatusCode::OK),
        ("node.example:26657", StatusCode::OK),
        ("NODE.Example:1", StatusCode::OK),
        ("10.0.0.5:8080", StatusCode::OK),
        ("localhost:26657", StatusCode::OK),
        ("10.0.0.5:8081", StatusCode::FORBIDDEN),
        ("10.0.0.5", StatusCode::FORBIDDEN),
        ("sub.node.example", StatusCode::FORBIDDEN),
        ("evil.example", StatusCode::FORBIDDEN),
    ] {
        let (status, _, v) = send(&a, peers_from(host, None)).await;
        assert_eq!(status, want, "{host}: {v}");
    }
    let (_, _, v) = send(&a, peers_from("evil.example", None)).await;
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("node.example") && msg.contains("10.0.0.5:8080"),
        "{msg}"
    );

    let open = Fake {
        access: RpcAccess {
            allowed_hosts: vec!["*".into()],
            ..RpcAccess::default()
        },
        ..Fake::default()
    };
    let a = app(Arc::new(open));
    let (status, _, _) = send(&a, peers_from("evil.example:26657", None)).await;
    assert_eq!(status, StatusCode::OK);
}

/// The listen address passes the Host check; on 0.0.0.0 or [::] every IP
/// literal does, but no DNS name.
#[test]
fn host_rules_follow_the_listen_address() {
    let on = |listen: &str| HostAllowList::new(&[], Some(listen.parse().unwrap()));
    let all = on("0.0.0.0:26657");
    for ok in [
        "10.1.2.3:26657",
        "10.1.2.3",
        "203.0.113.9:80",
        "[fe80::1]:9",
        "[::]:1",
        "localhost",
    ] {
        assert!(all.allows(ok), "{ok}");
    }
    for no in [
        "evil.example:26657",
        "10.1.2.3.nip.io:26657",
        "1.2.3",
        "node:26657",
        "[zz]:1",
    ] {
        assert!(!all.allows(no), "{no}");
    }
    assert!(
        all.describe().contains("any IP address"),
        "{}",
        all.describe()
    );
    assert!(on("[::]:26657").allows("192.168.1.9:1"));

    let one = on("10.0.0.5:26657");
    assert!(one.allows("10.0.0.5:26657"));
    assert!(one.allows("127.0.0.1:26657"));
    for no in [
        "10.0.0.5:26658",
        "10.0.0.5",
        "10.0.0.6:26657",
        "evil.example:26657",
    ] {
        assert!(!one.allows(no), "{no}");
    }
    let http = on("10.0.0.5:80");
    assert!(http.allows("10.0.0.5") && http.allows("10.0.0.5:80"));
    let v6 = on("[fd00::5]:26657");
    assert!(v6.allows("[fd00:0::5]:26657") && !v6.allows("[fd00::6]:26657"));

    let none = HostAllowList::new(&[], None);
    assert!(none.allows("[::1]:5") && !none.allows("10.0.0.5:26657"));
}

/// A configured origin is answered with Access-Control-Allow-Origin, and
/// its preflight with what it may send; others are still refused.
#[tokio::test]
async fn cors_origins_when_configured() {
    let fake = Fake {
        access: RpcAccess {
            cors_origins: vec!["https://wallet.example".into()],
            ..RpcAccess::default()
        },
        ..Fake::default()
    };
    let a = app(Arc::new(fake));
    let (status, headers, v) = send(&a, peers_from(HOST, Some("https://wallet.example"))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["result"], json!([]));
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://wallet.example"
    );
    assert_eq!(headers["vary"], "origin");

    let req = Request::options("/rpc/v1")
        .header("host", HOST)
        .header("origin", "https://wallet.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = send(&a, req).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://wallet.example"
    );
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert_eq!(headers["access-control-allow-headers"], "content-type");

    for other in ["https://evil.example", "http://wallet.example", "null"] {
        let (status, headers, _) = send(&a, peers_from(HOST, Some(other))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{other}");
        assert!(headers.get("access-control-allow-origin").is_none());
    }
    // Still a text/plain POST from the allowed page is refused.
    let req = Request::post("/rpc/v1")
        .header("host", HOST)
        .header("origin", "https://wallet.example")
        .header("content-type", "text/plain")
        .body(Body::from(r#"{"jsonrpc":"2.0","id":1,"method":"peers"}"#))
        .unwrap();
    let (status, _, _) = send(&a, req).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let any = Fake {
        access: RpcAccess {
            cors_origins: vec!["*".into()],
            ..RpcAccess::default()
        },
        ..Fake::default()
    };
    let a = app(Arc::new(any));
    let (status, headers, _) = send(&a, peers_from(HOST, Some("https://any.example"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["access-control-allow-origin"], "*");
}

/// One raw HTTP/1.1 request to `addr`: the status code and the body.
async fn raw(addr: std::net::SocketAddr, host: &str, content_type: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"peers"}"#;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /rpc/v1 HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    let code = resp.split(' ').nth(1).unwrap().parse().unwrap();
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (code, body)
}

/// `serve` accepts its bound address as Host (here 127.0.0.2, outside the
/// localhost names), and refuses other hosts and non-JSON posts.
#[tokio::test]
async fn served_over_tcp() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (addr, task) = serve(
        "127.0.0.2:0".parse().unwrap(),
        Arc::new(Fake::default()),
        RpcLimits::default(),
        async move {
            let _ = rx.await;
        },
    )
    .await
    .unwrap();
    let (code, body) = raw(addr, &addr.to_string(), "application/json").await;
    assert_eq!(code, 200, "{body}");
    let other_port = format!("127.0.0.2:{}", addr.port().wrapping_add(1));
    for host in ["evil.example", other_port.as_str(), "127.0.0.3"] {
        let (code, body) = raw(addr, host, "application/json").await;
        assert_eq!(code, 403, "{host}: {body}");
        assert!(body.contains("rpc.allowed_hosts"), "{body}");
    }
    let (code, body) = raw(addr, &addr.to_string(), "text/plain").await;
    assert_eq!(code, 415, "{body}");
    let _ = tx.send(());
    task.await.unwrap();
}
