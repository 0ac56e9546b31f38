//! `kite bench net`: Kite's throughput and latency on a local network,
//! beside the limits of the machine measured in the same run.
//!
//! 1. The machine's limits ([`crate::limits`]).
//! 2. A fresh testnet of `--validators` (1 leader + validators, no
//!    sentry) in a folder of its own on 127.0.0.1, free ports, the genesis
//!    propose timeout set to `--propose-timeout`; the nodes run this very
//!    binary, started here and stopped at the end. With `--delay`, each
//!    node reaches the others through a delay line ([`crate::delay`])
//!    that holds every byte that long each way.
//! 3. The block interval while idle (empty blocks).
//! 4. Saturation: `--txs` transfers, pre-signed, from `--senders` accounts
//!    over every validator's RPC as fast as they are accepted: committed
//!    tx/s and latency; CPU seconds each node used per committed tx
//!    (from /proc); each node's RSS.
//! 5. Fixed offered rates (`--rates`), `--rate-secs` each: latency.
//! 6. Each node's RSS after the load, once it stops falling (the
//!    allocator gives freed memory back within seconds; see
//!    [`settled_rss`]).
//!
//! It prints a table of figures beside their limits and ratios, and JSON
//! with `--json`. docs/PERFORMANCE.md holds the latest table.

use crate::bench::{LoadArgs, LoadReport, cpu_secs, run_load};
use crate::delay::DelayProxy;
use crate::limits::{Limits, measure};
use anyhow::{Context, bail};
use kite_types::Genesis;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Arguments of `kite bench net`.
#[derive(clap::Args, Debug, Clone)]
pub struct NetBenchArgs {
    /// Validators (node0 leads).
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// Transfers of the saturation run.
    #[arg(long, default_value_t = 40_000)]
    pub txs: u64,
    /// Sender accounts.
    #[arg(long, default_value_t = 64)]
    pub senders: u64,
    /// Offered rates for the latency runs, tx/s, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "2000,5000")]
    pub rates: Vec<u64>,
    /// Seconds of each fixed-rate run.
    #[arg(long, default_value_t = 10)]
    pub rate_secs: u64,
    /// The genesis propose timeout.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub propose_timeout: Duration,
    /// Txs per JSON-RPC batch request of the saturation run (1 to 100).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// A node setting for every node, as `kite start` takes it
    /// (`--set consensus.max_block_txs=3000`); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// One-way delay between the nodes (`50ms`): every node reaches the
    /// others through a user-space delay line (see `delay.rs`); 0 for
    /// none.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub delay: Duration,
    /// Short limits (0.3 s each) and a short idle measure.
    #[arg(long)]
    pub quick: bool,
    /// Where to lay out the testnet (kept); a temporary folder, removed at
    /// the end, by default.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// One node's resources.
#[derive(Debug, Clone, Serialize)]
pub struct NodeFigures {
    /// node0, node1, ...
    pub name: String,
    /// CPU seconds during the saturation run.
    pub cpu_s: f64,
    /// Microseconds of CPU per committed tx during the saturation run.
    pub cpu_us_per_tx: f64,
    /// Resident memory before the load, idle, MiB.
    pub rss_idle_mib: f64,
    /// Peak resident memory (VmHWM), MiB.
    pub rss_peak_mib: f64,
    /// Resident memory after the load, once it stopped falling, MiB.
    pub rss_after_mib: f64,
    /// Heap the node held before the load, as its allocator counts it
    /// (`kite_allocator_allocated_bytes`), MiB; part of it may never have
    /// been touched, so it can exceed the RSS.
    pub heap_idle_mib: f64,
    /// Heap the node held after the load, when its RSS was read, MiB.
    pub heap_after_mib: f64,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct NetBench {
    /// The machine's limits.
    pub limits: Limits,
    /// Validators.
    pub validators: usize,
    /// The genesis propose timeout, ms.
    pub propose_timeout_ms: u64,
    /// Txs per JSON-RPC request at saturation.
    pub batch: usize,
    /// Node settings given with `--set`.
    pub settings: Vec<String>,
    /// One-way delay between the nodes, ms (0: none).
    pub delay_ms: u64,
    /// Bytes the delay lines carried (0 without `--delay`): the nodes'
    /// traffic crossed them.
    pub delayed_bytes: u64,
    /// Mean time between blocks while idle (empty blocks), ms.
    pub idle_block_ms: f64,
    /// The saturation run.
    pub saturation: LoadReport,
    /// Committed tx/s at saturation over the batch-verify bound.
    pub saturation_ratio: f64,
    /// Fixed-rate runs.
    pub rates: Vec<LoadReport>,
    /// Per node.
    pub nodes: Vec<NodeFigures>,
}

/// The nodes this run started; stopped (SIGTERM, then SIGKILL after 10 s)
/// when dropped.
struct Nodes {
    children: Vec<(String, Child)>,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for (_, c) in &self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (_, c) in &mut self.children {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A base port whose `2 * nodes` ports are free on 127.0.0.1 now.
fn free_base_port(nodes: usize) -> anyhow::Result<u16> {
    for _ in 0..200 {
        let base: u16 = 20_000 + rand::random::<u16>() % 30_000;
        let free = (0..2 * nodes as u16)
            .all(|k| std::net::TcpListener::bind(("127.0.0.1", base + k)).is_ok());
        if free {
            return Ok(base);
        }
    }
    bail!("found no {} free consecutive ports on 127.0.0.1", 2 * nodes)
}

const MIB: f64 = 1024.0 * 1024.0;

/// Each node's heap as its allocator counts it, MiB (NaN where the
/// metric cannot be read).
async fn heaps(rpc: &[String]) -> Vec<f64> {
    let mut out = Vec::new();
    for url in rpc {
        let heap = match crate::client::Client::new(url, Duration::from_secs(5)) {
            Ok(c) => c.metric("kite_allocator_allocated_bytes").await,
            Err(e) => Err(e),
        };
        out.push(heap.map_or(f64::NAN, |b| b / MIB));
    }
    out
}

/// Resident memory of `pid` (`VmRSS`, or `VmHWM` for the peak), MiB.
/// Longest wait for the nodes' memory to settle after the load.
const SETTLE_MAX_SECS: u64 = 60;
/// The memory has settled once the nodes' RSS together fell by less than
/// this over [`SETTLE_WINDOW`] seconds.
const SETTLE_MIB: f64 = 2.0;
const SETTLE_WINDOW: usize = 5;

/// Each node's RSS once it stops falling: sampled every second until the
/// sum fell by less than [`SETTLE_MIB`] over the last [`SETTLE_WINDOW`]
/// seconds, at most `max_secs`.
async fn settled_rss(pids: &[u32], max_secs: u64) -> Vec<f64> {
    let sample = || -> Vec<f64> { pids.iter().map(|p| mem_mib(*p, "VmRSS:")).collect() };
    let mut last = sample();
    let mut sums = vec![last.iter().sum::<f64>()];
    for _ in 0..max_secs {
        tokio::time::sleep(Duration::from_secs(1)).await;
        last = sample();
        sums.push(last.iter().sum());
        if let Some(then) = sums
            .len()
            .checked_sub(SETTLE_WINDOW + 1)
            .and_then(|i| sums.get(i))
            && then - sums.last().copied().unwrap_or(0.0) < SETTLE_MIB
        {
            break;
        }
    }
    last
}

fn mem_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// With `--delay`: a delay line in front of each node's p2p port, and
/// every node's peers rewritten to reach the others through them, with
/// peer exchange off so that no node learns a direct address.
async fn delay_lines(dir: &Path, n: usize, delay: Duration) -> anyhow::Result<Vec<DelayProxy>> {
    let text = std::fs::read_to_string(dir.join("testnet.json"))?;
    let file: serde_json::Value = serde_json::from_str(&text)?;
    let nodes = file["nodes"]
        .as_array()
        .context("testnet.json has no nodes")?;
    // `/ip4/127.0.0.1/tcp/PORT/p2p/ID`
    let mut lines = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    for node in nodes.iter().take(n) {
        let addr = node["p2p"].as_str().context("a node without p2p")?;
        let parts: Vec<&str> = addr.split('/').collect();
        let (Some(port), Some(id)) = (parts.get(4), parts.get(6)) else {
            bail!("unexpected p2p address {addr}");
        };
        let target: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
        lines.push(DelayProxy::start(target, delay).await?);
        ids.push((*id).to_owned());
    }
    for i in 0..n {
        let path = dir.join(format!("node{i}")).join("config.toml");
        let mut c = kite_node::config::Config::load(&path)?;
        c.p2p.peers = (0..n)
            .filter(|j| *j != i)
            .map(|j| format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", lines[j].addr.port(), ids[j]))
            .collect();
        c.p2p.pex = false;
        std::fs::write(&path, c.to_documented_toml())?;
    }
    Ok(lines)
}

/// Lays out the testnet in `dir` and starts its nodes (behind delay lines
/// with `--delay`).
async fn start_net(
    a: &NetBenchArgs,
    dir: &Path,
) -> anyhow::Result<(Nodes, Vec<String>, Vec<DelayProxy>)> {
    crate::testnet::init(&crate::testnet::TestnetInitArgs {
        quiet: a.json,
        out: dir.to_owned(),
        validators: a.validators,
        sentries: 0,
        archival: 0,
        base_port: free_base_port(a.validators)?,
        chain_id: "kite-bench".into(),
        force: true,
        hosts: Vec::new(),
    })?;
    let lines = if a.delay.is_zero() {
        Vec::new()
    } else {
        delay_lines(dir, a.validators, a.delay).await?
    };
    let mut nodes = Nodes {
        children: Vec::new(),
    };
    let mut rpc = Vec::new();
    for i in 0..a.validators {
        let home = dir.join(format!("node{i}"));
        let gpath = home.join("genesis.json");
        let mut g = Genesis::load(&gpath)?;
        g.propose_timeout = a.propose_timeout;
        std::fs::write(&gpath, g.to_json())?;
        let log = std::fs::File::create(home.join("node.log"))?;
        let child = Command::new("/proc/self/exe")
            .args(["start", "--home"])
            .arg(&home)
            .args(a.set.iter().map(|kv| format!("--{kv}")))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting node{i}"))?;
        nodes.children.push((format!("node{i}"), child));
    }
    let text = std::fs::read_to_string(dir.join("testnet.json"))?;
    let file: serde_json::Value = serde_json::from_str(&text)?;
    for n in file["nodes"]
        .as_array()
        .context("testnet.json has no nodes")?
    {
        rpc.push(n["rpc"].as_str().context("a node without rpc")?.to_owned());
    }
    crate::testnet::wait(&crate::testnet::NetArgs {
        net: dir.to_owned(),
        height: 2,
        timeout: 90,
        quiet: a.json,
    })
    .await
    .context("the benchmark network did not come up")?;
    Ok((nodes, rpc, lines))
}

/// The mean time between blocks over `window`, ms.
async fn idle_block_ms(rpc: &str, window: Duration) -> anyhow::Result<f64> {
    let client = crate::client::Client::new(rpc, Duration::from_secs(5))?;
    let height = |c: crate::client::Client| async move {
        c.call::<_, kite_node::rpc::StatusView>("status", serde_json::json!({}))
            .await
            .map(|s| s.height)
    };
    let h0 = height(client.clone()).await?;
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let h1 = height(client).await?;
    let blocks = h1.saturating_sub(h0).max(1);
    Ok(t0.elapsed().as_secs_f64() * 1000.0 / blocks as f64)
}

/// `kite bench net`.
pub async fn bench_net(a: &NetBenchArgs) -> anyhow::Result<()> {
    if a.validators == 0 || a.senders == 0 || a.txs == 0 {
        bail!("--validators, --senders and --txs must be at least 1");
    }
    if let Some(bad) = a.set.iter().find(|kv| !kv.contains('=')) {
        bail!("--set takes KEY=VALUE (consensus.max_block_txs=3000), got {bad:?}");
    }
    let (dir, temp) = match &a.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("kite-bench-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir)?;
    let result = run(a, &dir).await;
    if temp {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let b = result?;
    if a.json {
        println!("{}", serde_json::to_string(&b)?);
    } else {
        print(&b);
    }
    Ok(())
}

async fn run(a: &NetBenchArgs, dir: &Path) -> anyhow::Result<NetBench> {
    if !a.json {
        eprintln!("measuring this machine's limits...");
    }
    let limits = tokio::task::block_in_place(|| measure(a.quick, dir))?;
    if !a.json {
        eprintln!(
            "starting {} validators in {}...",
            a.validators,
            dir.display()
        );
    }
    let (nodes, rpc, lines) = start_net(a, dir).await?;
    let idle = if a.quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(3)
    };
    let idle_block_ms = idle_block_ms(&rpc[0], idle).await?;
    let load = |txs: u64, rate: u64| LoadArgs {
        rpc: rpc.clone(),
        key: dir.join("faucet.key"),
        txs,
        senders: a.senders.min(txs),
        rate,
        drain_timeout: 60,
        batch: a.batch,
        json: true,
    };
    let pids: Vec<u32> = nodes.children.iter().map(|(_, c)| c.id()).collect();
    let cpu = |pids: &[u32]| -> Vec<f64> {
        pids.iter()
            .map(|p| cpu_secs(&p.to_string()).unwrap_or(0.0))
            .collect()
    };
    let idle_rss: Vec<f64> = pids.iter().map(|p| mem_mib(*p, "VmRSS:")).collect();
    let idle_heap = heaps(&rpc).await;
    if !a.json {
        eprintln!("saturation: {} txs from {} senders...", a.txs, a.senders);
    }
    let before = cpu(&pids);
    let saturation = run_load(&load(a.txs, 0)).await?;
    let after = cpu(&pids);
    let peaks: Vec<f64> = pids.iter().map(|p| mem_mib(*p, "VmHWM:")).collect();
    let mut rates = Vec::new();
    for r in &a.rates {
        if !a.json {
            eprintln!("offered {r} tx/s for {} s...", a.rate_secs);
        }
        rates.push(run_load(&load(r.saturating_mul(a.rate_secs).max(1), *r)).await?);
    }
    let after_rss = settled_rss(&pids, if a.quick { 1 } else { SETTLE_MAX_SECS }).await;
    let after_heap = heaps(&rpc).await;
    let nodes_figures = nodes
        .children
        .iter()
        .enumerate()
        .map(|(i, (name, c))| {
            let cpu_s = after[i] - before[i];
            NodeFigures {
                name: name.clone(),
                cpu_s,
                cpu_us_per_tx: cpu_s * 1e6 / saturation.committed.max(1) as f64,
                rss_idle_mib: idle_rss[i],
                rss_peak_mib: peaks[i].max(mem_mib(c.id(), "VmHWM:")),
                rss_after_mib: after_rss[i],
                heap_idle_mib: idle_heap[i],
                heap_after_mib: after_heap[i],
            }
        })
        .collect();
    drop(nodes);
    let bound = limits.verify_bound(a.validators);
    Ok(NetBench {
        saturation_ratio: saturation.committed_tps / bound.max(1.0),
        limits,
        validators: a.validators,
        propose_timeout_ms: a.propose_timeout.as_millis() as u64,
        batch: a.batch,
        settings: a.set.clone(),
        delay_ms: u64::try_from(a.delay.as_millis()).unwrap_or(u64::MAX),
        delayed_bytes: lines.iter().map(DelayProxy::bytes).sum(),
        idle_block_ms,
        saturation,
        rates,
        nodes: nodes_figures,
    })
}

/// Prints the figures beside their limits.
fn print(b: &NetBench) {
    crate::limits::print(&b.limits);
    println!();
    let bound = b.limits.verify_bound(b.validators);
    let verify_us = 1e6 / b.limits.verify.one.max(1.0);
    println!(
        "Kite, {} validators on 127.0.0.1, propose timeout {} ms, {} txs per RPC request at saturation{}{}:",
        b.validators,
        b.propose_timeout_ms,
        b.batch,
        if b.settings.is_empty() {
            String::new()
        } else {
            format!(", settings {}", b.settings.join(" "))
        },
        if b.delay_ms == 0 {
            String::new()
        } else {
            format!(
                ", {} ms one-way delay between nodes ({} MiB through the delay lines)",
                b.delay_ms,
                b.delayed_bytes / (1024 * 1024)
            )
        }
    );
    println!("| figure | Kite | limit | ratio |");
    println!("|---|---|---|---|");
    let s = &b.saturation;
    println!(
        "| committed tx/s at saturation ({} txs) | {:.0} | {:.0} (batch verify / {}) | {:.2} |",
        s.txs, s.committed_tps, bound, b.validators, b.saturation_ratio
    );
    println!(
        "| latency at saturation, p50 / p99 | {} / {} ms | | |",
        s.latency_ms.p50, s.latency_ms.p99
    );
    for r in &b.rates {
        println!(
            "| offered {} tx/s: committed tx/s, latency p50 / p99 | {:.0}, {} / {} ms | {} | {:.2} |",
            r.rate,
            r.committed_tps,
            r.latency_ms.p50,
            r.latency_ms.p99,
            r.rate,
            r.committed_tps / (r.rate as f64).max(1.0)
        );
    }
    println!(
        "| block interval while idle | {:.0} ms | | |",
        b.idle_block_ms
    );
    for n in &b.nodes {
        println!(
            "| {}: CPU per committed tx | {:.1} µs | {:.1} µs (one ed25519 verify) | {:.1} |",
            n.name,
            n.cpu_us_per_tx,
            verify_us,
            n.cpu_us_per_tx / verify_us.max(1e-9)
        );
    }
    for n in &b.nodes {
        println!(
            "| {}: RSS idle before / peak / idle after the load | {:.0} / {:.0} / {:.0} MiB | | |",
            n.name, n.rss_idle_mib, n.rss_peak_mib, n.rss_after_mib
        );
    }
    for n in &b.nodes {
        println!(
            "| {}: heap held (allocator) idle before / after the load | {:.0} / {:.0} MiB | | |",
            n.name, n.heap_idle_mib, n.heap_after_mib
        );
    }
    println!(
        "| load generator CPU (saturation run) | {:.2} s | | |",
        s.client_cpu_s
    );
}
