//! `kite bench load`: drive signed transfers at a running network and
//! report submitted and committed tx/s and submit-to-commit latency.
//!
//! 1. The faucet key funds `--senders` fresh accounts (one transfer each,
//!    the last one awaited until committed).
//! 2. Each sender submits its share of `--txs` transfers in nonce order,
//!    its requests spread over the `--rpc` endpoints, with an overall rate
//!    cap when `--rate` is given.
//! 3. A watcher follows new blocks on the first endpoint (it asks for the
//!    tip every [`WATCH_EVERY`]) and matches their tx hashes with the
//!    submit times: latency = commit seen - submitted. A commit is seen at
//!    most `WATCH_EVERY` plus two requests after the endpoint stored it.

use crate::client::Client;
use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use kite_node::rpc::{AccountView, BlockView, BroadcastResult, StatusView};
use kite_types::{Hash, NodeKey, Payload, Tx};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How often the watcher asks the first endpoint for its tip (50 ms before
/// 2026-12-02, which added 25 ms to every latency on average).
const WATCH_EVERY: Duration = Duration::from_millis(10);

/// How long the senders' funding may take to reach every endpoint.
const FUNDED_WAIT: Duration = Duration::from_secs(60);

/// Waits until every endpoint holds the funding of every sender.
async fn wait_all_funded(
    clients: &[Client],
    senders: &[NodeKey],
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    for c in clients {
        for s in senders {
            loop {
                let acct: AccountView = c.call("account", json!({"id": s.public()})).await?;
                if acct.balance > 0 {
                    break;
                }
                if Instant::now() >= deadline {
                    let at = c.call::<_, StatusView>("status", json!({})).await?.height;
                    bail!(
                        "sender {} is not funded on an endpoint at height {at} after {within:?}",
                        s.public()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Ok(())
}

/// Arguments of `kite bench load`.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// RPC URLs, comma-separated; requests are spread over them.
    #[arg(long, env = "KITE_RPC", value_delimiter = ',', required = true)]
    pub rpc: Vec<String>,
    /// Faucet key file (funds the senders).
    #[arg(long, env = "KITE_KEY")]
    pub key: PathBuf,
    /// Transfers to send.
    #[arg(long, default_value_t = 10_000)]
    pub txs: u64,
    /// Sender accounts.
    #[arg(long, default_value_t = 32)]
    pub senders: u64,
    /// Overall submit rate cap, tx/s (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Longest wait for the last commits after submitting, seconds.
    #[arg(long, default_value_t = 60)]
    pub drain_timeout: u64,
    /// Most txs per JSON-RPC batch request (1 to 100): as fast as
    /// possible, every request; at a fixed rate, a sender that fell behind
    /// sends what is due in one. The node admits a batch with one
    /// signature verification.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Sends `amount` from `faucet` to each of `senders` through `client`,
/// waiting for the last transfer to commit.
pub async fn fund(
    client: &Client,
    faucet: &NodeKey,
    chain: &str,
    senders: &[NodeKey],
    amount: u64,
) -> anyhow::Result<()> {
    let acct: AccountView = client
        .call("account", json!({"id": faucet.public()}))
        .await?;
    for (nonce, (i, s)) in (acct.next_nonce..).zip(senders.iter().enumerate()) {
        let tx = Tx::sign(
            faucet,
            chain,
            nonce,
            Payload::Transfer {
                to: s.public(),
                amount,
            },
        );
        let wait = if i + 1 == senders.len() {
            "commit"
        } else {
            "accept"
        };
        let _: BroadcastResult = client
            .call(
                "broadcast_tx",
                json!({"tx": hex::encode(tx.encode()), "wait": wait}),
            )
            .await
            .context("funding the senders")?;
    }
    Ok(())
}

/// Submit-to-commit latency percentiles, ms.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

/// What a load run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    /// Offered rate, tx/s (0: as fast as the nodes accept).
    pub rate: u64,
    /// Txs planned.
    pub txs: u64,
    /// Sender accounts.
    pub senders: u64,
    /// RPC endpoints used.
    pub endpoints: usize,
    /// Txs the nodes accepted.
    pub submitted: u64,
    /// Txs the nodes refused.
    pub refused: u64,
    /// Why the first refused tx was refused (the node's error).
    pub first_refusal: Option<String>,
    /// Accepted txs seen committed.
    pub committed: u64,
    /// Accepted tx/s while submitting.
    pub submitted_tps: f64,
    /// Committed tx/s, from the first submit to the last commit seen.
    pub committed_tps: f64,
    /// Submit-to-commit latency.
    pub latency_ms: Latency,
    /// CPU seconds this process (the load generator) used while it ran.
    pub client_cpu_s: f64,
}

/// CPU seconds (user + system) process `pid` used so far (`self` for this
/// one), from /proc.
pub fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of stat, 12 and 13 after the name.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// `kite bench load`.
pub async fn load(a: &LoadArgs) -> anyhow::Result<()> {
    let r = run_load(a).await?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "submitted {} txs: {:.0} tx/s ({} refused)",
            r.submitted, r.submitted_tps, r.refused
        );
        println!("committed {} txs: {:.0} tx/s", r.committed, r.committed_tps);
        println!(
            "submit-to-commit latency: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
            r.latency_ms.p50, r.latency_ms.p90, r.latency_ms.p99, r.latency_ms.max
        );
        println!("load generator CPU: {:.2} s", r.client_cpu_s);
    }
    if r.committed < r.submitted {
        bail!(
            "{} submitted txs were not seen committed",
            r.submitted - r.committed
        );
    }
    Ok(())
}

/// Runs a load and measures it (no output but the progress bar, hidden
/// with `--json`).
pub async fn run_load(a: &LoadArgs) -> anyhow::Result<LoadReport> {
    if a.senders == 0 || a.txs == 0 {
        bail!("--senders and --txs must be at least 1");
    }
    if !(1..=kite_node::rpc::MAX_BATCH).contains(&a.batch) {
        bail!(
            "--batch must be 1 to {}, got {}",
            kite_node::rpc::MAX_BATCH,
            a.batch
        );
    }
    let clients: Vec<Client> = a
        .rpc
        .iter()
        .map(|u| Client::new(u, Duration::from_secs(60)))
        .collect::<Result<_, _>>()?;
    let main = clients[0].clone();
    let faucet = NodeKey::load(&a.key)?;
    let status: StatusView = main.call("status", json!({})).await?;
    let chain = status.chain_id.clone();

    // 1. Fund the senders.
    let senders: Vec<NodeKey> = (0..a.senders).map(|_| NodeKey::generate()).collect();
    let acct: AccountView = main.call("account", json!({"id": faucet.public()})).await?;
    let per_tx_amount = 1u64;
    let grant = a.txs / a.senders * per_tx_amount + 1_000;
    if acct.balance < grant.saturating_mul(a.senders) {
        bail!(
            "the faucet {} holds {}, it needs {} to fund {} senders",
            faucet.public(),
            acct.balance,
            grant.saturating_mul(a.senders),
            a.senders
        );
    }
    fund(&main, &faucet, &chain, &senders, grant).await?;
    let start_height = main
        .call::<_, StatusView>("status", json!({}))
        .await?
        .height;
    // Every endpoint must hold the funding before its senders submit: a
    // node a block behind the first would refuse their first txs as
    // unfunded, and every later tx of those senders would wait on a nonce
    // gap for good (seen with the nodes behind delay lines).
    wait_all_funded(&clients, &senders, FUNDED_WAIT).await?;

    // 2. Sign everything up front so signing does not limit the load.
    let sink = NodeKey::generate().public();
    let per_sender = a.txs / a.senders;
    let extra = a.txs % a.senders;
    let mut plans: Vec<Vec<Tx>> = Vec::with_capacity(senders.len());
    for (i, s) in senders.iter().enumerate() {
        let n = per_sender + u64::from((i as u64) < extra);
        plans.push(
            (1..=n)
                .map(|k| {
                    Tx::sign(
                        s,
                        &chain,
                        k,
                        Payload::Transfer {
                            to: sink,
                            amount: per_tx_amount,
                        },
                    )
                })
                .collect(),
        );
    }

    let bar = if a.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(a.txs)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} committed {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let submitted: Arc<Mutex<HashMap<Hash, Instant>>> = Arc::default();
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let first_refusal: Arc<Mutex<Option<String>>> = Arc::default();
    let cpu0 = cpu_secs("self").unwrap_or(0.0);
    let t0 = Instant::now();
    let interval = (a.rate > 0).then(|| Duration::from_secs_f64(a.senders as f64 / a.rate as f64));
    let batch = a.batch;

    let mut tasks = Vec::new();
    for (i, plan) in plans.into_iter().enumerate() {
        let client = clients[i % clients.len()].clone();
        let submitted = submitted.clone();
        let refused = refused.clone();
        let first_refusal = first_refusal.clone();
        tasks.push(tokio::spawn(async move {
            // At a fixed rate, tx k is due at start + k * interval and the
            // sender sends what is due (open loop: a slow answer does not
            // lower the offered rate), its latency counted from when it
            // was due. As fast as possible, the txs go `batch` at a time.
            let start = Instant::now();
            let mut k = 0;
            while k < plan.len() {
                let n = match interval {
                    Some(iv) => {
                        tokio::time::sleep_until((start + iv.mul_f64(k as f64)).into()).await;
                        let due = (start.elapsed().as_secs_f64() / iv.as_secs_f64()) as usize + 1;
                        due.saturating_sub(k).clamp(1, batch)
                    }
                    None => batch,
                };
                let group = &plan[k..(k + n).min(plan.len())];
                let hashes: Vec<Hash> = group.iter().map(Tx::hash).collect();
                {
                    let now = Instant::now();
                    let mut map = submitted.lock().await;
                    for (j, h) in hashes.iter().enumerate() {
                        let at = interval.map_or(now, |iv| start + iv.mul_f64((k + j) as f64));
                        map.insert(*h, at);
                    }
                }
                k += group.len();
                let params: Vec<Value> = group
                    .iter()
                    .map(|tx| json!({"tx": hex::encode(tx.encode())}))
                    .collect();
                // A request that fails as a whole counts all its txs as
                // refused, though some may have been admitted.
                let answers: Vec<anyhow::Result<BroadcastResult>> =
                    match client.call_batch("broadcast_tx", params).await {
                        Ok(a) => a,
                        Err(e) => hashes.iter().map(|_| Err(anyhow::anyhow!("{e}"))).collect(),
                    };
                for (h, r) in hashes.iter().zip(answers) {
                    if let Err(e) = &r {
                        first_refusal
                            .lock()
                            .await
                            .get_or_insert_with(|| format!("{e:#}"));
                        refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        submitted.lock().await.remove(h);
                    }
                }
            }
        }));
    }

    // 3. Watch blocks and match commits.
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000, 3)?;
    let mut committed = 0u64;
    let mut height = start_height;
    let mut submit_done: Option<Instant> = None;
    let mut last_commit = t0;
    loop {
        if submit_done.is_none() && tasks.iter().all(|t| t.is_finished()) {
            submit_done = Some(Instant::now());
        }
        let expected = a.txs - refused.load(std::sync::atomic::Ordering::Relaxed);
        if committed >= expected {
            break;
        }
        if let Some(d) = submit_done
            && d.elapsed() > Duration::from_secs(a.drain_timeout)
        {
            break;
        }
        let tip = main
            .call::<_, StatusView>("status", json!({}))
            .await?
            .height;
        while height < tip {
            height += 1;
            let b: BlockView = main.call("block", json!({"height": height})).await?;
            let seen = Instant::now();
            let mut map = submitted.lock().await;
            for h in &b.txs {
                if let Some(at) = map.remove(h) {
                    committed += 1;
                    last_commit = seen;
                    let ms = seen.duration_since(at).as_millis().max(1);
                    hist.record(u64::try_from(ms).unwrap_or(u64::MAX)).ok();
                }
            }
            bar.set_position(committed);
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
    bar.finish_and_clear();
    for t in tasks {
        t.abort();
    }
    let submit_secs = submit_done
        .unwrap_or_else(Instant::now)
        .duration_since(t0)
        .as_secs_f64()
        .max(1e-9);
    let commit_secs = last_commit.duration_since(t0).as_secs_f64().max(1e-9);
    let sent = a.txs - refused.load(std::sync::atomic::Ordering::Relaxed);
    Ok(LoadReport {
        rate: a.rate,
        txs: a.txs,
        senders: a.senders,
        endpoints: clients.len(),
        submitted: sent,
        refused: a.txs - sent,
        first_refusal: first_refusal.lock().await.clone(),
        committed,
        submitted_tps: sent as f64 / submit_secs,
        committed_tps: committed as f64 / commit_secs,
        latency_ms: Latency {
            p50: hist.value_at_quantile(0.50),
            p90: hist.value_at_quantile(0.90),
            p99: hist.value_at_quantile(0.99),
            max: hist.max(),
        },
        client_cpu_s: cpu_secs("self").unwrap_or(0.0) - cpu0,
    })
}
