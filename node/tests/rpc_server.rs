//! The JSON-RPC server against a fake backend: envelope rules, named
//! params, error objects, limits, health codes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use kite_node::rpc::*;
use kite_types::{Hash, PublicKey};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tower::ServiceExt;

#[derive(Default)]
struct Fake {
    healthy: AtomicBool,
}

#[async_trait]
impl RpcBackend for Fake {
    async fn broadcast_tx(&self, tx: Vec<u8>, wait: WaitFor) -> Result<BroadcastResult, RpcError> {
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
        Err(RpcError::internal("unused"))
    }
    async fn peers(&self) -> Result<Vec<PeerView>, RpcError> {
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

async fn call(app: &axum::Router, body: &str) -> (StatusCode, Value) {
    let req = Request::post("/rpc/v1")
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn app(fake: Arc<Fake>) -> axum::Router {
    router(
        fake,
        RpcLimits {
            max_body_bytes: 4096,
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

    let get = |p: &'static str| Request::get(p).body(Body::empty()).unwrap();
    let r = a.clone().oneshot(get("/health")).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    fake.healthy.store(true, Ordering::Relaxed);
    let r = a.clone().oneshot(get("/health")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = a.clone().oneshot(get("/metrics")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
