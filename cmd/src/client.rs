//! A small JSON-RPC client for the commands that talk to a node.

use anyhow::{Context, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Longest JSON-RPC answer read (a batch of blocks in JSON stays far below).
const MAX_ANSWER_BYTES: usize = 64 << 20;
/// Longest `/metrics` page read.
const MAX_METRICS_BYTES: usize = 4 << 20;

/// The body of `resp`, refused past `cap` bytes (the client's deadline
/// bounds the time).
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > cap {
            bail!("the answer is over {cap} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A node's JSON-RPC endpoint.
#[derive(Clone)]
pub struct Client {
    base: String,
    url: String,
    http: reqwest::Client,
    next_id: std::sync::Arc<AtomicU64>,
}

impl Client {
    /// A client of `base` (e.g. `http://127.0.0.1:26657`); requests go to
    /// `base/rpc/v1`. Each call has a deadline of `timeout`.
    pub fn new(base: &str, timeout: Duration) -> anyhow::Result<Client> {
        let base = base.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("RPC address {base:?} must be a URL such as http://127.0.0.1:26657");
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .context("building the HTTP client")?;
        Ok(Client {
            base: base.to_owned(),
            url: format!("{base}/rpc/v1"),
            http,
            next_id: std::sync::Arc::new(AtomicU64::new(1)),
        })
    }

    /// Calls `method` with named `params`; a JSON-RPC error becomes an
    /// error carrying the node's message.
    pub async fn call<P: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        params: P,
    ) -> anyhow::Result<T> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let v = self.post(&body).await?;
        answer(method, &v)
    }

    /// The value of the metric `name` (a gauge or counter without labels)
    /// from the node's `GET /metrics`.
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let url = format!("{}/metrics", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("cannot read {url}"))?;
        let body = read_capped(resp, MAX_METRICS_BYTES)
            .await
            .with_context(|| format!("reading {url}"))?;
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .with_context(|| format!("{url} has no {name}"))?
            .trim()
            .parse()
            .with_context(|| format!("{url}: {name} is not a number"))
    }

    /// Posts a JSON-RPC body; returns the JSON answer.
    async fn post(&self, body: &Value) -> anyhow::Result<Value> {
        let resp = self
            .http
            .post(&self.url)
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.url))?;
        let status = resp.status();
        let body = read_capped(resp, MAX_ANSWER_BYTES)
            .await
            .with_context(|| format!("reading the answer of {}", self.url))?;
        serde_json::from_slice(&body)
            .with_context(|| format!("{} answered {status} with no JSON-RPC body", self.url))
    }

    /// Calls `method` once per item of `params` in one JSON-RPC batch
    /// request; returns each call's outcome in the order of `params`.
    pub async fn call_batch<P: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        params: Vec<P>,
    ) -> anyhow::Result<Vec<anyhow::Result<T>>> {
        let first = self
            .next_id
            .fetch_add(params.len() as u64, Ordering::Relaxed);
        let body: Vec<Value> = params
            .iter()
            .zip(first..)
            .map(|(p, id)| json!({"jsonrpc": "2.0", "id": id, "method": method, "params": p}))
            .collect();
        let v = self.post(&Value::Array(body)).await?;
        let Some(answers) = v.as_array() else {
            let msg = v
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("not a JSON-RPC batch answer");
            bail!("{method} batch: {msg}");
        };
        // Answers are matched by id, whatever their order.
        let mut by_id: std::collections::HashMap<u64, &Value> = answers
            .iter()
            .filter_map(|a| Some((a.get("id")?.as_u64()?, a)))
            .collect();
        Ok((first..first + params.len() as u64)
            .map(|id| {
                let a = by_id
                    .remove(&id)
                    .with_context(|| format!("{method}: no answer for request {id}"))?;
                answer(method, a)
            })
            .collect())
    }
}

/// The result of one JSON-RPC answer, or its error with the node's message.
fn answer<T: DeserializeOwned>(method: &str, v: &Value) -> anyhow::Result<T> {
    if let Some(e) = v.get("error") {
        let msg = e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("unknown error");
        bail!("{method}: {msg}");
    }
    let result = v.get("result").cloned().unwrap_or(Value::Null);
    serde_json::from_value(result).with_context(|| format!("{method}: unexpected result"))
}
