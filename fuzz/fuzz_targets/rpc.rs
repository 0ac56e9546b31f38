//! The JSON-RPC server: the fuzzer's bytes are the body of a POST to `/`
//! (single requests, batches, garbage). The backend answers at once, so
//! what is exercised is the server's parsing, dispatch and parameter
//! decoding. Checks: no panic, and every answer with status 200 is a
//! JSON-RPC response object (or an array of them, for a batch).

#![no_main]

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use kite_node::rpc::{
    AccountView, BlockQuery, BlockView, BroadcastResult, HealthView, KvView, PeerView, RpcBackend,
    RpcError, RpcLimits, StatusView, TxStatus, ValidatorsView, WaitFor, router,
};
use kite_types::{Hash, PublicKey};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::sync::Arc;
use tower::ServiceExt;

/// Answers every call at once.
struct Quick;

#[async_trait]
impl RpcBackend for Quick {
    async fn broadcast_tx(&self, tx: Vec<u8>, wait: WaitFor) -> Result<BroadcastResult, RpcError> {
        Ok(BroadcastResult {
            hash: Hash::digest(&tx),
            height: (wait == WaitFor::Commit).then_some(1),
        })
    }
    async fn tx_query(&self, _hash: Hash) -> Result<TxStatus, RpcError> {
        Err(RpcError::not_found("no such tx"))
    }
    async fn block(&self, q: BlockQuery) -> Result<BlockView, RpcError> {
        Err(RpcError::not_found(format!("no block {q:?}")))
    }
    async fn status(&self) -> Result<StatusView, RpcError> {
        Err(RpcError::internal("no status here"))
    }
    async fn peers(&self) -> Result<Vec<PeerView>, RpcError> {
        Ok(vec![])
    }
    async fn validators(&self) -> Result<ValidatorsView, RpcError> {
        Err(RpcError::internal("no validators here"))
    }
    async fn account(&self, _id: PublicKey) -> Result<AccountView, RpcError> {
        Err(RpcError::not_found("no account"))
    }
    async fn kv_get(&self, _owner: PublicKey, _key: Vec<u8>) -> Result<KvView, RpcError> {
        Err(RpcError::not_found("no value"))
    }
    async fn health(&self) -> HealthView {
        HealthView {
            healthy: true,
            reason: String::new(),
            height: 1,
        }
    }
    fn metrics_text(&self) -> String {
        "# EOF\n".into()
    }
}

fn is_response(v: &Value) -> bool {
    v.get("jsonrpc") == Some(&Value::String("2.0".into()))
        && v.get("id").is_some()
        && (v.get("result").is_some() != v.get("error").is_some())
}

fuzz_target!(|data: &[u8]| {
    let app = router(Arc::new(Quick), RpcLimits::default());
    let Ok(req) = Request::post("/")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Body::from(data.to_vec()))
    else {
        return;
    };
    kite_fuzz::block_on(async {
        let Ok(resp) = app.oneshot(req).await;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 22)
            .await
            .expect("the server's answer is read");
        if status == StatusCode::OK {
            let v: Value = serde_json::from_slice(&bytes).expect("a 200 answer is JSON");
            match &v {
                Value::Array(items) => assert!(items.iter().all(is_response), "{v}"),
                other => assert!(is_response(other), "{v}"),
            }
        }
    });
});
